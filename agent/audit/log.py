"""The device's audit log: append-only JSON lines in an RFC 9162 tree, C2SP checkpoints.

Every append writes one canonical line and fsyncs it, then replaces ``state.json`` (size and
right edge) atomically. After ``kill -9`` the next ``open`` trusts only complete lines: it
replays any line the state file missed, cuts a partial last line off and records that in an
``error`` entry. Checkpoints are signed every N entries, every T minutes, when a segment
rotates and at ``close``; each goes to ``checkpoints.log`` and to ``on_checkpoint`` (MQTT).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.atomic import append_durable, fsync_dir, write_atomic
from agent.audit.entries import INTERNAL_KINDS, Entry, decode_entry, encode_entry
from agent.audit.merkle import CompactRange, leaf_hash
from agent.audit.note import SignedCheckpoint, check_name, parse_checkpoint_text, sign_checkpoint, split_notes
from agent.audit.purge import plan_purge, seed_from
from agent.audit.settings import AuditSettings
from agent.audit.store import (
    CHECKPOINTS_FILE,
    STATE_FILE,
    list_segments,
    load_state,
    read_segment,
    segment_name,
)
from agent.clock import Clock
from agent.errors import PayloadError

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
JSON = Any


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


class AuditLog:
    """Use ``AuditLog.open(...)``; thread-safe; ``close()`` signs a last checkpoint."""

    def __init__(
        self,
        directory: Path,
        key: Ed25519PrivateKey,
        origin: str,
        *,
        clock: Clock,
        settings: AuditSettings,
        retention_days: int,
    ) -> None:
        self.directory = directory
        self.origin = check_name(origin)
        self.settings = settings
        self.retention_days = retention_days
        self.on_checkpoint: Callable[[bytes], None] | None = None
        self._key = key
        self._clock = clock
        self._lock = threading.RLock()
        self._tree = CompactRange()
        self._fd = -1
        self._seg_first = 0
        self._seg_count = 0
        self._seg_bytes = 0
        self._seg_day = -1
        self._cp_size = -1
        self._policy: dict[str, JSON] | None = None
        self._start: dict[str, JSON] | None = None
        self._cp_mono = clock.monotonic()
        self._pending: list[bytes] = []
        self._notifier: int | None = None

    # --- opening and recovery --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | Path,
        key: Ed25519PrivateKey,
        origin: str,
        clock: Clock,
        settings: AuditSettings,
        *,
        retention_days: int = 365,
        on_checkpoint: Callable[[bytes], None] | None = None,
    ) -> AuditLog:
        """Open or create the log in ``directory``, recovering from a crash if needed."""
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = cls(path, key, origin, clock=clock, settings=settings, retention_days=retention_days)
        log.on_checkpoint = on_checkpoint
        with log._lock:
            notes = log._recover()
            for code, message in notes:
                log._append("error", {"code": code, "message": message})
        log._deliver()
        return log

    def _recover(self) -> list[tuple[str, str]]:
        notes: list[tuple[str, str]] = []
        segments = list_segments(self.directory)
        while segments:
            first, path = segments[-1]
            seg = read_segment(path)
            if seg.lines:
                break
            path.unlink()  # a rotation cut short: not even its first line was written
            notes.append(("empty_segment_removed", f"{path.name} held no complete entry"))
            segments.pop()
        if not segments:
            self._start_segment(int(self._clock.time() * 1000), None)
            self._recover_checkpoints()
            return notes
        notes += self._replay(first, path, seg.lines)
        if seg.tail:
            digest = hashlib.sha256(seg.tail).hexdigest()[:16]
            os.truncate(path, seg.complete_bytes)
            notes.append(
                ("partial_entry_discarded", f"{len(seg.tail)} bytes (sha256 {digest}…) cut off {path.name}")
            )
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._save_state()
        self._recover_checkpoints()
        if self._seg_count > 1:  # each run opens its own segment, recording its settings
            self._rotate(int(self._clock.time() * 1000))
        return notes

    def _replay(self, first: int, path: Path, lines: list[bytes]) -> list[tuple[str, str]]:
        """Rebuild the right edge: from state.json when it matches, else from the segment seed."""
        head = decode_entry(lines[0])
        state = load_state(self.directory)
        start, notes = 0, []
        if state and state.get("segment") == path.name and 0 < state.get("segment_count", 0) <= len(lines):
            self._tree = CompactRange(state["size"], [base64.b64decode(h) for h in state["edge"]])
            start = state["segment_count"]
        else:
            if state is not None:
                notes.append(("state_rebuilt", f"{STATE_FILE} did not match {path.name}; rebuilt it"))
            self._tree = seed_from(head)
        self._seg_first, self._seg_day = first, head.ts_ms // DAY_MS
        self._track(head)
        for line in lines[1:]:
            if b'"policy":' in line:  # a start or policy_change entry
                self._track(decode_entry(line))
        for n, line in enumerate(lines[start:], start=start):
            entry = decode_entry(line)
            if entry.index != self._tree.size:
                raise PayloadError(
                    f"{path.name} line {n + 1}: entry index {entry.index}, expected {self._tree.size}"
                )
            self._tree.append(leaf_hash(line))
        self._seg_count = len(lines)
        self._seg_bytes = sum(len(line) + 1 for line in lines)
        return notes

    def _recover_checkpoints(self) -> None:
        path = self.directory / CHECKPOINTS_FILE
        if not path.exists():
            return
        data = path.read_bytes()
        notes, tail = split_notes(data)
        if tail:
            os.truncate(path, len(data) - len(tail))
        if notes:
            self._cp_size = parse_checkpoint_text(notes[-1][1].decode("utf-8").split("\n\n")[0] + "\n")[1]

    # --- appending ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._tree.size

    def root(self) -> bytes:
        with self._lock:
            return self._tree.root()

    def append(self, kind: str, fields: Mapping[str, JSON]) -> int:
        """Validate, write and fsync one entry; return its index. Refuses unknown kinds/fields."""
        if kind in INTERNAL_KINDS:
            raise PayloadError(f"audit entry kind {kind!r} is written by the log itself")
        with self._lock:
            index = self._append(kind, fields)
        self._deliver()
        return index

    def _append(self, kind: str, fields: Mapping[str, JSON]) -> int:
        if self._fd < 0:
            raise PayloadError("the audit log is closed")
        ts_ms = int(self._clock.time() * 1000)
        if self._seg_count >= self.settings.segment_max_entries or ts_ms // DAY_MS != self._seg_day:
            self._rotate(ts_ms)
        entry = encode_entry(self._tree.size, ts_ms, kind, fields)
        self._write(entry)
        self._track(entry)
        if self._notifier != threading.get_ident():  # not an entry the checkpoint callback wrote
            self._maybe_checkpoint()
        return entry.index

    def _track(self, entry: Entry) -> None:
        """Remember what ran and the policy in force, for the next segment's first entry."""
        if entry.kind in ("start", "segment"):
            self._start = entry.data if entry.kind == "start" else entry.data["start"]
        if entry.kind in ("start", "policy_change", "segment"):
            self._policy = entry.data["policy"]

    def _write(self, entry: Entry) -> None:
        append_durable(self._fd, entry.line + b"\n")
        self._tree.append(leaf_hash(entry.line))
        self._seg_count += 1
        self._seg_bytes += len(entry.line) + 1
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "size": self._tree.size,
            "edge": [_b64(h) for h in self._tree.hashes],
            "segment": segment_name(self._seg_first),
            "segment_count": self._seg_count,
        }
        write_atomic(self.directory / STATE_FILE, _json_line(state))

    def _rotate(self, ts_ms: int) -> None:
        if self._tree.size > self._cp_size:
            self._checkpoint()
        previous = segment_name(self._seg_first)
        os.close(self._fd)
        self._start_segment(ts_ms, previous)

    def _start_segment(self, ts_ms: int, previous: str | None) -> None:
        first = self._tree.size
        path = self.directory / segment_name(first)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fsync_dir(self.directory)
        self._seg_first, self._seg_count, self._seg_bytes = first, 0, 0
        self._seg_day = ts_ms // DAY_MS
        edge = [_b64(h) for h in self._tree.hashes]
        fields = {
            "previous": previous,
            "edge": edge,
            "policy": self._policy,
            "start": self._start,
            "checkpoint_every": self.settings.checkpoint_every_entries,
        }
        self._write(encode_entry(first, ts_ms, "segment", fields))

    # --- checkpoints -------------------------------------------------------------------------

    def maybe_checkpoint(self) -> SignedCheckpoint | None:
        """Sign a checkpoint if N entries or T minutes have passed since the last one."""
        with self._lock:
            cp = self._maybe_checkpoint()
        self._deliver()
        return cp

    def _maybe_checkpoint(self) -> SignedCheckpoint | None:
        if self._tree.size <= self._cp_size:
            return None
        new = self._tree.size - max(self._cp_size, 0)
        elapsed = self._clock.monotonic() - self._cp_mono
        if new >= self.settings.checkpoint_every_entries or (
            elapsed >= self.settings.checkpoint_every_minutes * 60
        ):
            return self._checkpoint()
        return None

    def checkpoint(self) -> SignedCheckpoint:
        """Sign the current tree head now."""
        with self._lock:
            cp = self._checkpoint()
        self._deliver()
        return cp

    def _deliver(self) -> None:
        """Hand signed notes to ``on_checkpoint`` outside the lock, in order. An entry the
        callback appends (the service audits its own publish) does not trigger a checkpoint."""
        with self._lock:
            if self._notifier is not None:
                return  # the thread already delivering will also deliver these
            self._notifier = threading.get_ident()
        while True:
            with self._lock:
                if not self._pending:
                    self._notifier = None
                    return
                note = self._pending.pop(0)
            if self.on_checkpoint is not None:
                try:
                    self.on_checkpoint(note)
                except Exception:  # a publisher failure must not stop the log; the note is on disk
                    logger.warning("audit checkpoint callback failed", exc_info=True)

    def _checkpoint(self) -> SignedCheckpoint:
        cp = sign_checkpoint(self.origin, self._tree.size, self._tree.root(), self._key)
        fd = os.open(self.directory / CHECKPOINTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            append_durable(fd, cp.note)
        finally:
            os.close(fd)
        self._cp_size, self._cp_mono = cp.size, self._clock.monotonic()
        self._pending.append(cp.note)
        return cp

    # --- retention ---------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> dict[str, JSON] | None:
        """Delete whole segments older than ``retention_days``; record what went in a purge entry."""
        record = self._purge(now)
        self._deliver()
        return record

    def _purge(self, now: float | None) -> dict[str, JSON] | None:
        with self._lock:
            now = self._clock.time() if now is None else now
            cutoff_ms = int(now * 1000) - self.retention_days * DAY_MS
            planned = plan_purge(self.directory, self._seg_first, cutoff_ms, self.retention_days)
            if planned is None:
                return None
            data, paths = planned
            self._append("purge", data)
            for path in paths:
                path.unlink()
            fsync_dir(self.directory)
            logger.info(
                "audit segments purged",
                extra={"fields": {"segments": len(paths), "first_kept": data["first_kept"]}},
            )
            return data

    def close(self) -> None:
        """Sign and publish a final checkpoint; if publishing it added an entry, sign once more
        on disk only (publishing that would add another), then release the file."""
        with self._lock:
            if self._fd < 0:
                return
            if self._tree.size > self._cp_size:
                self._checkpoint()
        self._deliver()
        with self._lock:
            if self._tree.size > self._cp_size:
                self._checkpoint()
                self._pending.clear()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_line(obj: dict[str, JSON]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"
