"""The device's audit log: append-only JSON lines in an RFC 9162 tree, C2SP checkpoints.

Every append first replaces ``state.json`` atomically with the head *after* the append (size,
root, right edge), signed by the device key (:mod:`agent.audit.statefile`), then writes one
canonical line and fsyncs it. After ``kill -9`` the next ``open`` trusts only complete lines,
cuts a partial last line off and records that in an ``error`` entry; the segment must then hold
exactly the attested entries or one fewer. More (an entry someone appended), fewer (a truncated
log) or another root refuse the start with :class:`~agent.errors.PayloadError` (exit 2), as
does a checkpoint larger than the log. Checkpoints are signed every N entries, every T minutes,
when a segment rotates and at ``close``; each goes to ``checkpoints.log`` and to
``on_checkpoint`` (MQTT).

A write that fails (a full disk) never leaves half a line or half a note behind, and never
stops the agent: the entry waits in memory (at most ``HELD_MAX``, oldest dropped and counted)
and is written, after an ``audit_delayed`` entry saying how many waited and why, as soon as a
write succeeds again. ``held`` and ``write_error`` tell the health message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.atomic import append_durable, fsync_dir, write_atomic
from agent.audit.entries import (
    INTERNAL_KINDS,
    Entry,
    decode_entry,
    encode_entry,
    new_salt,
    records_a_checkpoint,
)
from agent.audit.merkle import CompactRange, leaf_hash
from agent.audit.note import SignedCheckpoint, check_name, parse_checkpoint_text, sign_checkpoint, split_notes
from agent.audit.purge import plan_purge, seed_from
from agent.audit.settings import AuditConfig
from agent.audit.statefile import Head, read_head, signed_state
from agent.audit.store import (
    CHECKPOINTS_FILE,
    STATE_FILE,
    list_segments,
    load_state,
    read_regular,
    read_segment,
    segment_name,
)
from agent.clock import Clock
from agent.errors import PayloadError, StorageError

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
JSON = Any
HELD_MAX = 10_000
"""Entries kept in memory while the disk refuses writes; beyond it the oldest are dropped."""


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
        settings: AuditConfig,
        retention_days: int,
        linked_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self.directory = directory
        self.origin = check_name(origin)
        self.settings = settings
        self.retention_days = retention_days
        self.on_checkpoint: Callable[[bytes], None] | None = None
        self._key = key
        self._linked = list(linked_keys)
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
        self._queued = 0
        self._cp_mono = clock.monotonic()
        self._pending: list[bytes] = []
        self._notifier: int | None = None
        self._records = 0
        """Entries since the last checkpoint that record a checkpoint's message
        (``records_a_checkpoint``): they make none due."""
        self._refused = False
        """The last checkpoint tried was refused by the disk (``checkpoint_due``)."""
        self._reopen: tuple[int, str | None] | None = None
        self._held: list[tuple[str, dict[str, JSON]]] = []
        self._held_dropped = 0
        self._held_noted = False
        self.write_error: str | None = None

    # --- opening and recovery --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | Path,
        key: Ed25519PrivateKey,
        origin: str,
        clock: Clock,
        settings: AuditConfig,
        *,
        retention_days: int = 365,
        on_checkpoint: Callable[[bytes], None] | None = None,
        linked_keys: Sequence[Ed25519PublicKey] = (),
    ) -> AuditLog:
        """Open or create the log in ``directory``, recovering from a crash if needed.

        ``linked_keys``: the device's other keys that a key rotation recorded in the log links
        to ``key`` (``state_check`` found them); a ``state.json`` one of them signed is read as
        the device's own (a rotation interrupted after the new key attested the state)."""
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = cls(
            path, key, origin, clock=clock, settings=settings, retention_days=retention_days,
            linked_keys=linked_keys,
        )
        log.on_checkpoint = on_checkpoint
        with log._lock:
            try:
                notes = log._recover()
            except OSError as exc:
                raise StorageError(f"{path}: cannot open the audit log: {exc.strerror or exc}") from exc
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
        attested = self._attested_head(bool(segments))
        if not segments:
            if attested is not None and attested.size > 1:
                raise self._refuse(f"no segment left but {STATE_FILE} attests {attested.size} entries")
            self._recover_checkpoints()
            (self.directory / CHECKPOINTS_FILE).touch(mode=0o600)  # its absence later means deleted
            self._start_segment(int(self._clock.time() * 1000), None)
            return notes
        notes += self._replay(first, path, seg.lines)
        head = decode_entry(seg.lines[0])
        if seg.tail:
            digest = hashlib.sha256(seg.tail).hexdigest()[:16]
            os.truncate(path, seg.complete_bytes)
            notes.append(
                ("partial_entry_discarded", f"{len(seg.tail)} bytes (sha256 {digest}…) cut off {path.name}")
            )
        self._recover_checkpoints()
        self._check_head(attested)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._save_state(self._tree, self._seg_count)
        if self._seg_count > 1 or head.data["checkpoint_every"] != self.settings.checkpoint_every_entries:
            self._rotate(int(self._clock.time() * 1000))
        return notes

    def _refuse(self, why: str) -> PayloadError:
        return PayloadError(
            f"{self.directory}: {why}; refusing to continue the audit log (check it with "
            "`emotion-agent audit verify`, restore it from a backup, or archive the state folder "
            "and start afresh)"
        )

    def _attested_head(self, has_segments: bool) -> Head | None:
        """The head ``state.json`` attests; None for a state from before states were signed."""
        state = load_state(self.directory)
        if state is None:
            if has_segments:
                raise self._refuse(f"{STATE_FILE} is missing or unreadable")
            return None
        head = None
        for public in (self._key.public_key(), *self._linked):
            try:
                head = head or read_head(self.origin, state, public)
            except ValueError as exc:
                raise self._refuse(f"{STATE_FILE}: {exc}") from exc
        return head

    def _check_head(self, head: Head | None) -> None:
        """The segment holds the attested entries, or one fewer (a crash before the line)."""
        size = self._tree.size
        if self._cp_size > size:
            raise self._refuse(
                f"a checkpoint signs {self._cp_size} entries but the log holds {size}: it was truncated"
            )
        if head is None:  # unsigned state of an older version: only what a checkpoint covers
            if size > max(self._cp_size, 0):
                raise self._refuse(
                    f"{STATE_FILE} is unsigned and entries {max(self._cp_size, 0)}..{size - 1} are not "
                    "covered by a signed checkpoint"
                )
            return
        if size > head.size:
            raise self._refuse(
                f"entries {head.size}..{size - 1} were not written by this agent (the device attested "
                f"{head.size}): an entry was appended"
            )
        if size < head.size - 1:
            raise self._refuse(
                f"the log holds {size} entries but the device attested {head.size}: it was truncated"
            )
        if size == head.size and self._tree.root() != head.root:
            raise self._refuse(
                f"the root of the {size} entries is not the one the device attested: an entry was altered"
            )

    def _replay(self, first: int, path: Path, lines: list[bytes]) -> list[tuple[str, str]]:
        """Rebuild the right edge of the last segment from its seed (its ``segment`` entry)."""
        head = decode_entry(lines[0])
        self._tree = seed_from(head)
        self._seg_first, self._seg_day = first, head.ts_ms // DAY_MS
        self._track(head)
        for n, line in enumerate(lines):
            entry = decode_entry(line)
            if n:
                self._track(entry)
            if entry.index != self._tree.size:
                raise PayloadError(
                    f"{path.name} line {n + 1}: entry index {entry.index}, expected {self._tree.size}"
                )
            self._tree.append(leaf_hash(line))
        self._seg_count = len(lines)
        self._seg_bytes = sum(len(line) + 1 for line in lines)
        return []

    def _recover_checkpoints(self) -> None:
        path = self.directory / CHECKPOINTS_FILE
        if not path.exists():
            return
        data = read_regular(path)
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

    @property
    def held(self) -> int:
        """Entries waiting in memory for the disk to accept writes again."""
        return len(self._held)

    @property
    def waits_for_disk(self) -> bool:
        """Entries the disk refused, or a due checkpoint it refused: ``maybe_checkpoint`` tries
        them again (a refused checkpoint that was asked for, not due, waits until one is)."""
        with self._lock:
            return bool(self._held) or (self._refused and self._due())

    def append(self, kind: str, fields: Mapping[str, JSON]) -> int:
        """Validate, write and fsync one entry; return its index, or -1 when the disk refused
        the write and the entry waits in memory. Refuses unknown kinds/fields."""
        if kind in INTERNAL_KINDS:
            raise PayloadError(f"audit entry kind {kind!r} is written by the log itself")
        with self._lock:
            index = self._append(kind, fields)
        self._deliver()
        return index

    def _append(self, kind: str, fields: Mapping[str, JSON]) -> int:
        if self._fd < 0 and self._reopen is None:
            raise PayloadError("the audit log is closed")
        encode_entry(0, 0, kind, fields)  # refuse a malformed entry now, not when it is written
        if self._held and not self._flush_held():
            self._hold(kind, fields, None)
            return -1
        try:
            return self._append_now(kind, fields)
        except OSError as exc:
            self._hold(kind, fields, exc)
            return -1

    def _append_now(self, kind: str, fields: Mapping[str, JSON]) -> int:
        if self._reopen is not None:
            self._start_segment(*self._reopen)
        ts_ms = int(self._clock.time() * 1000)
        if self._seg_count >= self.settings.segment_max_entries or ts_ms // DAY_MS != self._seg_day:
            self._rotate(ts_ms)
        entry = encode_entry(self._tree.size, ts_ms, kind, fields, salt=new_salt())
        self._write(entry)
        self._track(entry)
        if records_a_checkpoint(kind, fields):
            self._records += 1
        else:  # also inside the checkpoint callback: the loop in ``_deliver`` hands it on too
            self._try_checkpoint(self._maybe_checkpoint)
        return entry.index

    def _try_checkpoint(self, sign: Callable[[], SignedCheckpoint | None]) -> SignedCheckpoint | None:
        """A checkpoint the disk refused is tried again later (its size was not recorded)."""
        try:
            cp = sign()
        except OSError as exc:
            self._note_error(exc)
            self._refused = True
            return None
        if cp is not None:
            self._refused = False
        return cp

    def _note_error(self, exc: OSError) -> None:
        error = f"{exc.strerror or exc}"
        if error != self.write_error:
            logger.error("audit log %s: cannot write: %s; entries wait in memory", self.directory, error)
        self.write_error = error

    def _hold(self, kind: str, fields: Mapping[str, JSON], exc: OSError | None) -> None:
        if exc is not None:
            self._note_error(exc)
        self._held.append((kind, dict(fields)))
        if len(self._held) > HELD_MAX:
            del self._held[0]
            self._held_dropped += 1

    def _flush_held(self) -> bool:
        """Write what waited, after an entry saying so; False if the disk still refuses."""
        try:
            if not self._held_noted:
                message = (
                    f"{len(self._held) + self._held_dropped} audit entries waited in memory "
                    f"({self._held_dropped} dropped) because the disk refused writes: {self.write_error}"
                )
                self._append_now("error", {"code": "audit_delayed", "message": message[:500]})
                self._held_noted = True
            while self._held:
                kind, fields = self._held[0]
                self._append_now(kind, fields)
                del self._held[0]
        except OSError as exc:
            self._note_error(exc)
            return False
        logger.warning("audit log %s: writes work again; delayed entries written", self.directory)
        self._held_noted, self._held_dropped, self.write_error = False, 0, None
        return True

    def _track(self, entry: Entry) -> None:
        """Remember what ran, the policy in force and the frames left queued, for the next
        segment's first entry."""
        if entry.kind in ("start", "segment"):
            self._start = entry.data if entry.kind == "start" else entry.data["start"]
        if entry.kind in ("start", "policy_change", "segment"):
            self._policy = entry.data["policy"]
        if entry.kind in ("start", "segment", "frames"):  # a start's queue is empty
            self._queued = entry.data.get("queued") or 0
    def _write(self, entry: Entry) -> None:
        """Attest the head after the append, then append: a failure leaves no partial line."""
        tree = self._tree.copy()
        tree.append(leaf_hash(entry.line))
        self._save_state(tree, self._seg_count + 1)
        try:
            append_durable(self._fd, entry.line + b"\n")
        except OSError:
            os.ftruncate(self._fd, self._seg_bytes)
            with contextlib.suppress(OSError):  # else attested one ahead, as a crash leaves it
                self._save_state(self._tree, self._seg_count)
            raise
        self._tree = tree
        self._seg_count += 1
        self._seg_bytes += len(entry.line) + 1

    def _save_state(self, tree: CompactRange, segment_count: int) -> None:
        head = Head(tree.size, tree.root(), list(tree.hashes), segment_name(self._seg_first), segment_count)
        state = signed_state(self.origin, head, self._key)
        write_atomic(self.directory / STATE_FILE, _json_line(state))

    def _rotate(self, ts_ms: int) -> None:
        if self._tree.size > self._cp_size:
            self._checkpoint()
        previous = segment_name(self._seg_first)
        os.close(self._fd)
        self._fd = -1
        self._reopen = (ts_ms, previous)
        self._start_segment(ts_ms, previous)

    def _start_segment(self, ts_ms: int, previous: str | None) -> None:
        """Open the next segment with its ``segment`` entry; on failure, none is left behind
        and the next append tries again (``_reopen``)."""
        first = self._tree.size
        path = self.directory / segment_name(first)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()  # left by an earlier attempt that the disk refused
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        saved = (self._seg_first, self._seg_count, self._seg_bytes, self._seg_day)
        self._fd = fd
        self._seg_first, self._seg_count, self._seg_bytes = first, 0, 0
        self._seg_day = ts_ms // DAY_MS
        edge = [_b64(h) for h in self._tree.hashes]
        fields = {
            "previous": previous,
            "edge": edge,
            "policy": self._policy,
            "start": self._start,
            "checkpoint_every": self.settings.checkpoint_every_entries,
            "queued": self._queued,
        }
        try:
            fsync_dir(self.directory)
            # legacy: it repeats the policy and start of entries an older version may have written
            self._write(encode_entry(first, ts_ms, "segment", fields, legacy=True, salt=new_salt()))
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            self._fd = -1
            self._seg_first, self._seg_count, self._seg_bytes, self._seg_day = saved
            self._reopen = (ts_ms, previous)
            raise
        self._reopen = None

    # --- checkpoints -------------------------------------------------------------------------

    def maybe_checkpoint(self) -> SignedCheckpoint | None:
        """Write entries that waited for the disk, then sign a checkpoint if N entries or T
        minutes have passed since the last one (None when the disk refuses it)."""
        with self._lock:
            if self._fd < 0 and self._reopen is None:
                return None
            if self._held:
                self._flush_held()
            cp = self._try_checkpoint(self._maybe_checkpoint)
        self._deliver()
        return cp

    def checkpoint_due(self) -> bool:
        """Whether ``maybe_checkpoint`` would sign a checkpoint now (N entries or T minutes after
        the last): the service signs it on library pages of its own then
        (``agent.memtrim.rare_task``). False after the disk refused the last one, until one is
        written again (the service's loop turn still tries it, without the trims, which would
        otherwise run twice on every turn while the disk is full)."""
        with self._lock:
            return not self._refused and self._due()

    def checkpoint_due_at(self) -> float | None:
        """Monotonic time ``maybe_checkpoint`` will sign the next checkpoint by time, if no entry
        makes one due before (None: nothing to sign, or the disk refused the last one)."""
        with self._lock:
            if self._refused or self._tree.size <= self._cp_size + self._records:
                return None
            return self._cp_mono + self.settings.checkpoint_every_minutes * 60

    def _due(self) -> bool:
        if self._tree.size <= self._cp_size + self._records:
            return False
        new = self._tree.size - max(self._cp_size, 0) - self._records
        elapsed = self._clock.monotonic() - self._cp_mono
        return new >= self.settings.checkpoint_every_entries or (
            elapsed >= self.settings.checkpoint_every_minutes * 60
        )

    def _maybe_checkpoint(self) -> SignedCheckpoint | None:
        return self._checkpoint() if self._due() else None

    def checkpoint(self) -> SignedCheckpoint | None:
        """Sign the current tree head now (None when the disk refuses the note)."""
        with self._lock:
            cp = self._try_checkpoint(self._checkpoint)
        self._deliver()
        return cp

    def _deliver(self) -> None:
        """Hand signed notes to ``on_checkpoint`` outside the lock, in order. A checkpoint that
        an entry appended by the callback makes due joins ``_pending`` and is handed on by this
        same loop; a checkpoint's own publish record makes none due (``records_a_checkpoint``)."""
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
            before = os.fstat(fd).st_size
            try:
                append_durable(fd, cp.note)
            except OSError:
                os.ftruncate(fd, before)  # never half a note
                raise
        finally:
            os.close(fd)
        self._cp_size, self._cp_mono = cp.size, self._clock.monotonic()
        self._records = 0
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
            if self._held:
                return None  # the disk refuses writes: purge once the record can be written
            try:
                self._append_now("purge", data)
            except OSError as exc:
                self._note_error(exc)
                return None
            if self._tree.size > self._cp_size:
                # Signed before the segments go: a log whose oldest entries are missing is then
                # excused only by a purge entry a checkpoint covers (a forged one never is).
                self._try_checkpoint(self._checkpoint)
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
            if self._fd < 0 and self._reopen is None:
                return
            if self._held:
                self._flush_held()
            if self._tree.size > self._cp_size:
                self._try_checkpoint(self._checkpoint)
        self._deliver()
        with self._lock:
            if self._held and not self._flush_held():
                logger.error(
                    "audit log %s: %d entries could not be written before stopping: %s",
                    self.directory, len(self._held), self.write_error,
                )
            if self._tree.size > self._cp_size:
                self._try_checkpoint(self._checkpoint)
                self._pending.clear()
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
            self._reopen = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_line(obj: dict[str, JSON]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"
