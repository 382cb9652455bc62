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
:class:`~agent.transport.spool_types.DropReport` that names no payload, only topics, counts and
the time span. The file itself (schema, settings, the check that it is the agent's) is
:mod:`agent.transport.spool_file`. This module is pure standard library; it never imports paho.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from agent.clock import Clock
from agent.errors import TransportError
from agent.transport.spool_file import item_from_row, open_spool_db
from agent.transport.spool_types import DropReason, DropReport, SpoolItem, SpoolStats

logger = logging.getLogger(__name__)

QUARANTINE_KEEP = 100
"""Quarantined rows kept for inspection; older ones are deleted (their drop is still counted)."""


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
        self._db = open_spool_db(path)
        self._first_id: int | None = None  # this run's first row: from it on, mono_ms ages rows

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
            item = item_from_row(row)
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

