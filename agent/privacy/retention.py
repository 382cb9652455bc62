"""Retention: derived data (spool, audit segments, local statistics) is deleted when due.

``due_purges`` is the pure planner: given the time and what is stored, it says exactly what
has reached its age limit. ``RetentionEnforcer`` runs it at start and on a timer (an injected
clock decides when) against stores that list and remove their items, and returns one
``PurgeRecord`` per store that removed anything, for the audit log. Parts that purge
themselves and keep their own proof run on the same timer as hooks: the audit log
(``AuditLog.purge`` drops whole segments and records the tree edge, so the rest still
verifies) and the MQTT spool (``Spool.enforce_limits``). Frames are not here: they are
zeroed when inference ends and have no retention setting at all.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from agent.clock import Clock
from agent.privacy.settings import RetentionConfig

logger = logging.getLogger(__name__)

Kind = Literal["spool", "audit", "stats"]
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One deletable thing: a spooled message, an audit segment, a day of statistics."""

    kind: Kind
    key: str
    created: float
    """Unix seconds when it was written."""
    size_bytes: int = 0


def limits_from(cfg: RetentionConfig) -> dict[Kind, int]:
    """Days each kind is kept."""
    return {"spool": cfg.spool_days, "audit": cfg.audit_days, "stats": cfg.stats_days}


def due_purges(now: float, items: Iterable[StoredItem], limits: Mapping[Kind, int]) -> list[StoredItem]:
    """Items whose age has reached their kind's limit (age ≥ days × 86 400 s), oldest first."""
    due = []
    for item in items:
        if item.kind not in limits:
            raise ValueError(f"no retention limit for {item.kind!r} items; known: {sorted(limits)}")
        if now - item.created >= limits[item.kind] * DAY_S:
            due.append(item)
    return sorted(due, key=lambda i: (i.created, i.key))


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """What one retention run removed from one store: enough for an auditor, integers only."""

    kind: Kind
    ts_ms: int
    limit_days: int
    cutoff_ms: int
    count: int
    bytes: int
    oldest_ms: int
    newest_ms: int
    keys_sha256: str
    """SHA-256 of the removed keys joined by newlines, so a later listing can be checked."""

    def as_payload(self) -> dict[str, object]:
        return {
            "event": "retention_purge",
            "kind": self.kind,
            "ts": self.ts_ms,
            "limit_days": self.limit_days,
            "cutoff": self.cutoff_ms,
            "count": self.count,
            "bytes": self.bytes,
            "oldest": self.oldest_ms,
            "newest": self.newest_ms,
            "keys_sha256": self.keys_sha256,
        }


class RetentionStore(Protocol):
    """Something that holds items of one kind and can delete them."""

    kind: Kind

    def list_items(self) -> list[StoredItem]: ...

    def remove(self, keys: Sequence[str]) -> int:
        """Delete these keys; return how many were removed."""
        ...


class DirectoryStore:
    """Files in one folder matching a glob, aged by modification time (e.g. daily stats files).

    Not for audit segments: deleting them behind the audit log's back would break its tree;
    pass ``AuditLog.purge`` as a hook instead.
    """

    def __init__(self, kind: Kind, folder: Path, pattern: str = "*") -> None:
        self.kind: Kind = kind
        self.folder = folder
        self.pattern = pattern

    def list_items(self) -> list[StoredItem]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in self.folder.glob(self.pattern):
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                out.append(StoredItem(self.kind, path.name, st.st_mtime, st.st_size))
        return out

    def remove(self, keys: Sequence[str]) -> int:
        removed = 0
        for key in keys:
            if "/" in key or key in ("", ".", ".."):
                raise ValueError(f"refusing to delete {key!r}: not a plain file name")
            try:
                (self.folder / key).unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed


@dataclass
class RetentionRun:
    """The outcome of one run: planner purges, self-purging hooks' reports, and failures."""

    records: list[PurgeRecord] = field(default_factory=list)
    reports: list[object] = field(default_factory=list)
    """Whatever a hook returned that was not None (an audit purge entry, spool drop reports)."""
    failed: list[str] = field(default_factory=list)
    """Stores or hooks that raised; the rest still ran. Named for the health message."""


SelfPurge = Callable[[], object]


class RetentionEnforcer:
    """Runs at start and every ``interval_minutes``; each purge becomes a record."""

    def __init__(
        self,
        cfg: RetentionConfig,
        stores: Sequence[RetentionStore],
        clock: Clock,
        hooks: Mapping[str, SelfPurge] | None = None,
    ) -> None:
        self.limits = limits_from(cfg)
        self.interval_s = cfg.interval_minutes * 60
        self.stores = list(stores)
        self.hooks = dict(hooks or {})
        self.clock = clock
        self.last_run: float | None = None
        """Monotonic time of the last run; None until the first (start-up) run. The timer is
        monotonic: on the wall clock, a clock stepped back by D days (a Pi without an RTC
        that booted with a date in the future, then corrected) held every purge for D days."""

    def retune(self, cfg: RetentionConfig) -> None:
        """A reload's new limits and interval; the next run is due one new interval after the
        last (a shorter interval no longer waits out the old one, up to a day)."""
        self.limits = limits_from(cfg)
        self.interval_s = cfg.interval_minutes * 60

    def due_at(self) -> float:
        """Monotonic time of the next run (the first is due at once)."""
        return -math.inf if self.last_run is None else self.last_run + self.interval_s

    def due(self) -> bool:
        """Whether ``run_if_due`` would run now."""
        return self.clock.monotonic() >= self.due_at()

    def run_if_due(self) -> RetentionRun | None:
        """Run when the timer says so (always the first time); None when not yet due."""
        return self.run() if self.due() else None

    def run(self) -> RetentionRun:
        """Purge every store and hook now and schedule the next run; a failure skips only itself."""
        now = self.clock.time()
        out = RetentionRun()
        for store in self.stores:
            try:
                record = self._purge(store, now)
            except Exception:  # one broken store must not keep the others' data past retention
                logger.warning("retention failed", exc_info=True, extra={"fields": {"store": store.kind}})
                out.failed.append(store.kind)
                continue
            if record is not None:
                out.records.append(record)
        for name, hook in self.hooks.items():
            try:
                report = hook()
            except Exception:  # as above: log, name it in health, keep going
                logger.warning("retention failed", exc_info=True, extra={"fields": {"store": name}})
                out.failed.append(name)
                continue
            if report is not None and report != []:
                out.reports.append(report)
        self.last_run = self.clock.monotonic()
        return out

    def _purge(self, store: RetentionStore, now: float) -> PurgeRecord | None:
        due = due_purges(now, store.list_items(), self.limits)
        if not due:
            return None
        removed = store.remove([i.key for i in due])
        limit = self.limits[store.kind]
        record = PurgeRecord(
            kind=store.kind,
            ts_ms=int(now * 1000),
            limit_days=limit,
            cutoff_ms=int((now - limit * DAY_S) * 1000),
            count=removed,
            bytes=sum(i.size_bytes for i in due),
            oldest_ms=int(due[0].created * 1000),
            newest_ms=int(due[-1].created * 1000),
            keys_sha256=hashlib.sha256("\n".join(i.key for i in due).encode()).hexdigest(),
        )
        logger.info(
            "retention purge",
            extra={"fields": {"kind": store.kind, "count": removed, "limit_days": limit}},
        )
        return record
