"""The offline spool: every outgoing message is on disk before it is sent, until its PUBACK.

paho keeps QoS 1 messages in memory only, so a broker outage longer than the process lives, or
a ``kill -9``, would lose them. The spool is one SQLite database in WAL mode with
``synchronous=FULL``: a row committed by :meth:`Spool.put` survives a crash of the process and
of the machine. Rows leave in three ways only, each of them counted:

- :meth:`Spool.ack` after the broker acknowledged the message (delivered, not a drop);
- retention: a row older than ``max_age_seconds`` (``retention.spool_days``). A row written
  since the spool was opened (this run) is aged by the clock's monotonic time, stored with it
  (``mono_ms``), not by the wall clock: a Raspberry Pi has no real-time clock and starts on
  fake-hwclock's last saved time or 1970, and NTP's later step forward must not make rows that
  are minutes old look older than retention. Monotonic time does not carry over a restart, so
  the rows of an earlier run are aged by the wall clock (``created_ms``);
- the size cap: while the rows' bytes exceed ``max_bytes`` the oldest go first;
- quarantine: a row that must never be sent (not this device's topic, not signed by its key,
  malformed) moves to the ``quarantine`` table (the last ``QUARANTINE_KEEP`` are kept for
  inspection) instead of being retried forever.

Every drop is reported through ``on_drop`` (the service routes it to the audit log) as a
:class:`DropReport` that names no payload, only topics, counts and the time span.
This module is pure standard library; it never imports paho.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.clock import Clock
from agent.errors import PayloadError, TransportError

logger = logging.getLogger(__name__)

DropReason = Literal["retention", "size_cap", "refused_by_broker", "quarantined"]

QUARANTINE_KEEP = 100
"""Quarantined rows kept for inspection; older ones are deleted (their drop is still counted)."""

CACHE_KIB = 256
"""SQLite's page cache for the spool's connection (``PRAGMA cache_size``), in KiB. Its default,
2000 KiB, fills up once the spool is that large (a broker away for a few hours): every put
sums the rows' sizes (``enforce_limits``), which reads every page, so the cache only ever holds
the last ones read while the file itself stays in the kernel's page cache. Measured with 10,000
spooled rows (6.5 MB): 2.1 MB of SQLite's memory against 0.3 MB, a put about as long (10-15 ms
either way at that size; 2.4 against 1.7 ms with 2,000 rows, which the default cache held
whole) (docs/vision.md, "Peak RSS")."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    mono_ms INTEGER
)
"""

_MONO_COLUMN = "ALTER TABLE spool ADD COLUMN mono_ms INTEGER"
"""For a spool written before ``mono_ms`` (clock.monotonic() at the put, this run's age)."""

_COLUMNS = {
    "spool": ("id", "topic", "payload", "retain", "created_ms", "mono_ms"),
    "quarantine": ("id", "topic", "payload", "created_ms", "reason", "quarantined_ms"),
}
"""The columns of each table, in order; a spool from before ``mono_ms`` lacks only that one."""

_QUARANTINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    topic BLOB,
    payload BLOB,
    created_ms INTEGER,
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One message waiting for its PUBACK; ``id`` orders the backlog."""

    id: int
    topic: str
    payload: bytes
    retain: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class DropReport:
    """What a purge removed, for the audit log: counts and times, never payloads."""

    reason: DropReason
    count: int
    bytes: int
    topics: dict[str, int] = field(default_factory=dict)
    oldest_ms: int = 0
    newest_ms: int = 0

    def to_body(self) -> dict[str, object]:
        """Integers and strings only, ready for a signed envelope."""
        return {
            "reason": self.reason,
            "count": self.count,
            "bytes": self.bytes,
            "topics": dict(sorted(self.topics.items())),
            "oldest_ms": self.oldest_ms,
            "newest_ms": self.newest_ms,
        }


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Backlog figures for the health message."""

    backlog: int
    bytes: int
    oldest_ms: int | None
    dropped: dict[str, int]


class Spool:
    """A crash-safe FIFO of outgoing messages in ``<state_dir>/spool.sqlite3``.

    Thread-safe: the service thread puts, the sender thread reads and acknowledges.
    """

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        max_bytes: int,
        max_age_seconds: int,
        on_drop: Callable[[DropReport], None] | None = None,
    ) -> None:
        if max_bytes < 1 or max_age_seconds < 1:
            raise ValueError("max_bytes and max_age_seconds must be positive")
        self.path = path
        self._clock = clock
        self._max_bytes = max_bytes
        self._max_age_ms = max_age_seconds * 1000
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._reporting = threading.RLock()
        """Held from a purge's transaction until ``on_drop`` returned, so that ``close`` waits for
        a report in flight; re-entrant: a report may publish, which spools and purges again."""
        self._dropped: Counter[str] = Counter()
        self._closed_stats: SpoolStats | None = None
        self._last_stats = SpoolStats(backlog=0, bytes=0, oldest_ms=None, dropped={})
        self._db = self._open(path)
        self._first_id: int | None = None  # this run's first row: from it on, mono_ms ages rows

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            problem = _schema_problem(db)  # before anything is written to another program's file
            if problem is None:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                db.execute("PRAGMA synchronous=FULL")
                db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                db.execute(_SCHEMA)
                if "mono_ms" not in _columns(db, "spool"):
                    db.execute(_MONO_COLUMN)
                db.execute(_QUARANTINE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                raise _foreign(path, str(exc)) from exc
            raise TransportError(
                f"{path}: cannot open the offline spool ({exc}); check that state_dir exists "
                "and is writable by the agent"
            ) from exc
        if problem is not None:
            db.close()
            raise _foreign(path, problem)
        if str(mode).lower() != "wal":
            db.close()
            raise TransportError(f"{path}: the spool needs SQLite WAL mode, the file system gave {mode!r}")
        return db

    def set_max_age(self, max_age_seconds: int) -> None:
        """A reloaded ``retention.spool_days``: rows are aged by it from the next limits check."""
        if max_age_seconds < 1:
            raise ValueError("max_age_seconds must be positive")
        with self._lock:
            self._max_age_ms = max_age_seconds * 1000

    def close(self) -> None:
        """Close the database; :meth:`stats` keeps answering with the figures at closing. Waits
        for a drop being reported by another thread: once closed, no drop is reported, so the
        owner can close what ``on_drop`` writes to (the audit log). It used to return meanwhile,
        and the report found the audit log closed (found by review)."""
        with self._reporting:
            if self._closed_stats is not None:
                return
            final = self.stats()
            with self._lock:
                self._db.close()
                self._closed_stats = final

    def _now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    def _mono_ms(self) -> int:
        return int(self._clock.monotonic() * 1000)

    def put(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Store a message durably and return its id; then apply the limits."""
        if not topic:
            raise ValueError("a spooled message needs a topic")
        try:
            with self._lock:
                cur = self._db.execute(
                    "INSERT INTO spool (topic, payload, retain, created_ms, mono_ms) VALUES (?, ?, ?, ?, ?)",
                    (topic, bytes(payload), int(retain), self._now_ms(), self._mono_ms()),
                )
                row_id = cur.lastrowid
                if self._first_id is None:
                    self._first_id = row_id
        except sqlite3.Error as exc:
            raise TransportError(f"{self.path}: cannot write to the offline spool: {exc}") from exc
        assert row_id is not None  # noqa: S101 - sqlite3 always sets it after an INSERT
        try:
            self.enforce_limits()
        except sqlite3.Error as exc:  # the row is stored; the limits are applied next time
            logger.warning("%s: spool limits not applied this time: %s", self.path, exc)
        return row_id

    def pending(self, after_id: int = 0, limit: int = 100) -> list[SpoolItem]:
        """The oldest unacknowledged messages with an id above ``after_id``, in order. A row
        whose columns have the wrong types (written by something else) is quarantined."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, retain, created_ms FROM spool WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        items = []
        for row in rows:
            item = _item(row)
            if isinstance(item, str):
                self.quarantine(row[0], item)
            else:
                items.append(item)
        return items

    def ack(self, item_id: int) -> bool:
        """Delete a message the broker acknowledged; False if it was already gone."""
        with self._lock:
            cur = self._db.execute("DELETE FROM spool WHERE id = ?", (item_id,))
        return cur.rowcount > 0

    def drop(self, item_id: int, reason: DropReason) -> None:
        """Remove one message that can never be delivered (the broker refused it), counted."""
        self._purge(reason, "id = ?", (item_id,))

    def quarantine(self, item_id: int, reason: str) -> None:
        """Move a row that must never be sent out of the queue, keeping it for inspection."""
        logger.error("spool row %d quarantined: %s", item_id, reason)
        now = self._now_ms()
        keep = (
            "INSERT OR REPLACE INTO quarantine (id, topic, payload, created_ms, reason, quarantined_ms) "
            "SELECT id, topic, payload, created_ms, ?, ? FROM spool WHERE id = ?",
            (reason[:500], now, item_id),
        )
        self._purge("quarantined", "id = ?", (item_id,), before_delete=keep)
        with self._lock:
            self._db.execute(
                "DELETE FROM quarantine WHERE id NOT IN "
                "(SELECT id FROM quarantine ORDER BY quarantined_ms DESC, id DESC LIMIT ?)",
                (QUARANTINE_KEEP,),
            )

    def enforce_limits(self) -> list[DropReport]:
        """Drop messages past retention, then the oldest while over the size cap."""
        reports = []
        with self._lock:
            first, max_age_ms = self._first_id, self._max_age_ms
        cutoff = self._now_ms() - max_age_ms
        if first is None:  # nothing written by this run: the wall clock for all
            aged = self._purge("retention", "created_ms < ?", (cutoff,))
        else:  # a clock stepped by NTP ages no row of this run (module docstring)
            aged = self._purge(
                "retention",
                "CASE WHEN id >= ? AND mono_ms IS NOT NULL THEN mono_ms < ? ELSE created_ms < ? END",
                (first, self._mono_ms() - max_age_ms, cutoff),
            )
        if aged is not None:
            reports.append(aged)
        with self._lock:
            total = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM spool").fetchone()[0]
        if total > self._max_bytes:
            last_id = self._last_id_to_shed(total - self._max_bytes)
            over = self._purge("size_cap", "id <= ?", (last_id,))
            if over is not None:
                reports.append(over)
        return reports

    def _last_id_to_shed(self, excess: int) -> int:
        """The id up to which the oldest rows hold at least ``excess`` bytes."""
        shed = 0
        last_id = 0
        with self._lock:
            for row_id, size in self._db.execute("SELECT id, LENGTH(payload) FROM spool ORDER BY id"):
                shed += size
                last_id = row_id
                if shed >= excess:
                    break
        return int(last_id)

    def _purge(
        self,
        reason: DropReason,
        where: str,
        args: tuple[int, ...],
        before_delete: tuple[str, tuple[object, ...]] | None = None,
    ) -> DropReport | None:
        with self._reporting:
            return self._purge_and_report(reason, where, args, before_delete)

    def _purge_and_report(
        self,
        reason: DropReason,
        where: str,
        args: tuple[int, ...],
        before_delete: tuple[str, tuple[object, ...]] | None,
    ) -> DropReport | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT topic, LENGTH(payload), created_ms FROM spool WHERE {where}",  # noqa: S608 - fixed clauses
                    args,
                ).fetchall()
                if before_delete is not None:
                    self._db.execute(*before_delete)
                self._db.execute(f"DELETE FROM spool WHERE {where}", args)  # noqa: S608 - fixed clauses
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        if not rows:
            return None
        times = [r[2] for r in rows if isinstance(r[2], int)] or [0]
        report = DropReport(
            reason=reason,
            count=len(rows),
            bytes=sum(r[1] or 0 for r in rows),
            topics=dict(Counter(r[0] if isinstance(r[0], str) else "?" for r in rows)),
            oldest_ms=min(times),
            newest_ms=max(times),
        )
        self._dropped[reason] += report.count
        logger.warning(
            "spool dropped %d unsent message(s): %s",
            report.count,
            reason,
            extra={"fields": {"reason": reason, "count": report.count, "bytes": report.bytes}},
        )
        if self._on_drop is not None:
            try:
                self._on_drop(report)
            except Exception:
                logger.exception("the spool's on_drop callback failed; the drop stays counted")
        return report

    def stats(self) -> SpoolStats:
        """Backlog figures; when the database cannot answer (a disk error), the last figures it
        gave, logged: ``close`` and the health message must not fail on them."""
        with self._lock:
            if self._closed_stats is not None:
                return self._closed_stats
            try:
                count, size, oldest = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(created_ms) FROM spool"
                ).fetchone()
            except sqlite3.Error as exc:
                logger.warning("%s: cannot read the spool's figures: %s", self.path, exc)
                last = self._last_stats
                return SpoolStats(last.backlog, last.bytes, last.oldest_ms, dict(self._dropped))
            self._last_stats = SpoolStats(
                backlog=count, bytes=size, oldest_ms=oldest, dropped=dict(self._dropped)
            )
            return self._last_stats


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({table})"))


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """Which table has columns other than the agent's, or None (a missing table is created).
    Something else's ``spool`` table took no row (every put failed) and then failed the figures
    read at close."""
    for table, expected in _COLUMNS.items():
        found = _columns(db, table)
        if found and found not in (expected, expected[:-1] if table == "spool" else expected):
            return f"its {table} table has the columns ({', '.join(found)}), not ({', '.join(expected)})"
    return None


def _foreign(path: Path, problem: str) -> PayloadError:
    return PayloadError(
        f"{path}: not an offline spool this agent wrote ({problem}); move the file away "
        f"(e.g. `mv {path} {path}.bad`, with its -wal and -shm files) and the agent starts a new, "
        "empty spool"
    )


def _item(row: tuple[object, ...]) -> SpoolItem | str:
    """A row as a :class:`SpoolItem`, or why it cannot be one (the reason for quarantine)."""
    row_id, topic, payload, retain, created = row
    if not isinstance(topic, str) or not topic:
        return f"topic is {type(topic).__name__}, not text"
    if not isinstance(payload, bytes | str):
        return f"payload is {type(payload).__name__}, not bytes"
    if not isinstance(retain, int) or not isinstance(created, int):
        return "retain or created_ms is not an integer"
    data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload
    assert isinstance(row_id, int)  # noqa: S101 - INTEGER PRIMARY KEY
    return SpoolItem(row_id, topic, data, bool(retain), created)
