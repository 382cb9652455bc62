"""Cosigned checkpoints a witness sends back, kept in the audit folder for the auditor.

The receiver publishes each checkpoint it cosigned on ``<base>/audit/cosignature`` (retained).
The device keeps only what is its own: a note that verifies with its own key, for a tree size
it signed (in ``checkpoints.log``), once, and, when ``audit.witnesses`` lists witnesses, only
with a valid cosignature by one of them. ``audit verify`` reads ``cosignatures.log`` as
external checkpoints, so a rewrite of the log after a witness saw it fails verification, and
``--witness`` names whose cosignatures count.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.atomic import append_durable, write_atomic
from agent.audit.cosignature import cosigner_key_id, cosigners, find_cosignature
from agent.audit.note import NoteError, SignedCheckpoint, checkpoint_origin, open_checkpoint, split_notes
from agent.audit.store import CHECKPOINTS_FILE
from agent.log_throttle import Throttled

logger = logging.getLogger(__name__)

COSIGNATURES_FILE = "cosignatures.log"
MAX_NOTE_BYTES = 8192
MAX_PER_SIZE = 3
"""Cosigned copies kept of one checkpoint (a witness or two, and a spare): the notes are public,
so anyone on the broker can send them back with junk "cosignature" lines, each one distinct."""
MAX_FILE_BYTES = 4 * 1024 * 1024
"""``cosignatures.log`` grows no further: past this it is rewritten with the copies of the
newest checkpoints, half of it (a witness's cosignature of a tree vouches for every smaller
one, so the newest are the ones that matter), every ~3 months with one witness."""


class CosignatureInbox:
    """Keeps cosigned copies of the device's own checkpoints. Each file is read once and then
    followed: ``checkpoints.log`` from where the last read stopped (it is append-only), and
    ``cosignatures.log`` through what this inbox appends (it is the only writer)."""

    def __init__(
        self,
        audit_dir: Path,
        public_key: Ed25519PublicKey,
        witnesses: Sequence[tuple[str, Ed25519PublicKey]] = (),
        origin: str | None = None,
    ) -> None:
        self.audit_dir = audit_dir
        self.public_key = public_key
        self.origin = origin
        """The device's log origin: a note of another one is refused as such (unknown: as a note
        without this device's signature)."""
        self.witnesses = tuple(witnesses)
        """(name, key) of ``audit.witnesses``: when any, a copy is kept only if one of them
        cosigned it, so junk copies cannot take the places of a witness's."""
        self._lock = threading.Lock()
        self._signed: dict[int, bytes] = {}
        """Tree size -> root of every checkpoint in ``checkpoints.log`` that verified."""
        self._read_to = 0
        """Bytes of ``checkpoints.log`` read into ``_signed``."""
        self._inode = 0
        """The inode those bytes were read from."""
        self._kept: set[bytes] | None = None
        self._notes: list[tuple[int, bytes]] = []
        """(tree size, note) of every kept copy, in the file's order."""
        self._per_size: Counter[int] = Counter()
        self._bytes = 0
        self._warn = Throttled(logger)

    def _signed_root(self, size: int) -> bytes | None:
        """The root this device signed at ``size``, reading what ``checkpoints.log`` gained."""
        if size not in self._signed:
            try:
                with (self.audit_dir / CHECKPOINTS_FILE).open("rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_size < self._read_to or st.st_ino != self._inode:  # cut or replaced
                        self._signed.clear()
                        self._read_to, self._inode = 0, st.st_ino
                    f.seek(self._read_to)
                    data = f.read()
            except OSError:
                return None
            notes, tail = split_notes(data)
            self._read_to += len(data) - len(tail)
            for _, note in notes:
                try:
                    cp = open_checkpoint(note, self.public_key)
                except NoteError:
                    continue
                self._signed[cp.size] = cp.root
        return self._signed.get(size)

    def _load_kept(self) -> set[bytes]:
        if self._kept is None:
            try:
                data = (self.audit_dir / COSIGNATURES_FILE).read_bytes()
            except FileNotFoundError:
                data = b""
            self._bytes = len(data)
            return self._keep([(self._size_of(note), note) for _, note in split_notes(data)[0]])
        return self._kept

    def _size_of(self, note: bytes) -> int:
        try:
            return open_checkpoint(note, self.public_key).size
        except NoteError:
            return -1  # not ours (written by hand?): the first to go when the file is full

    def _keep(self, notes: list[tuple[int, bytes]]) -> set[bytes]:
        """Index ``notes`` ((tree size, note), the file's, in its order); the set of them."""
        kept = {note for _, note in notes}
        self._kept, self._notes = kept, list(notes)
        self._per_size = Counter(size for size, _ in notes)
        return kept

    def _compact(self) -> None:
        """Rewrite the file with the copies of the newest checkpoints, up to half its limit."""
        kept: list[tuple[int, bytes]] = []
        total = 0
        for size, note in sorted(self._notes, key=lambda n: n[0], reverse=True):
            if total + len(note) > MAX_FILE_BYTES // 2:
                break
            kept.append((size, note))
            total += len(note)
        notes = sorted(kept, key=lambda n: n[0])
        write_atomic(self.audit_dir / COSIGNATURES_FILE, b"".join(note for _, note in notes))
        self._bytes = total
        self._keep(notes)
        logger.info("%s was full: rewritten with the cosigned copies of its %d newest checkpoints",
                    COSIGNATURES_FILE, len(notes))

    def accept(self, payload: bytes) -> bool:
        """Keep a cosigned note of ours; False (logged, at most once a minute per reason) for
        anything else, a copy too many or a full file."""
        if not payload:
            return False  # a cleared retained topic
        refused = self._refusal(payload)
        if refused:
            self._warn.warning(*refused)
        return refused is None

    def _refusal(self, payload: bytes) -> tuple[str, ...] | None:
        """None once ``payload`` is kept; else (kind, message, args...) to log, or () for a copy
        already kept (said nothing of: a retained message comes again at every reconnect)."""
        cp = self._opened(payload)
        if not isinstance(cp, SignedCheckpoint):
            return cp
        with self._lock:
            kept = self._load_kept()
            if self._signed_root(cp.size) != cp.root:
                return ("unknown", f"ignored a cosigned checkpoint this device never signed (size {cp.size})")
            if payload in kept:
                return ()
            no_room = self._no_room(cp.size, len(payload))  # a full file is compacted first
            if no_room:
                return no_room
            kept = self._load_kept()
            fd = os.open(self.audit_dir / COSIGNATURES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                append_durable(fd, payload)
            finally:
                os.close(fd)
            kept.add(payload)
            self._notes.append((cp.size, payload))
            self._per_size[cp.size] += 1
            self._bytes += len(payload)
        return None

    def _opened(self, payload: bytes) -> SignedCheckpoint | tuple[str, ...]:
        """The device's checkpoint in ``payload``, or why the message is refused: too large, not
        a checkpoint this device's key signed, or without the cosignature of a configured witness."""
        if len(payload) > MAX_NOTE_BYTES:
            return ("size", f"ignored a cosignature message of {len(payload)} bytes (at most "
                    f"{MAX_NOTE_BYTES})")
        other = self._other_origin(payload)
        if other is not None:
            return ("origin", "ignored a cosigned checkpoint of another log: origin %r, this device's is %r",
                    other, self.origin or "")
        try:
            cp = open_checkpoint(payload, self.public_key)
        except NoteError as exc:
            return ("invalid", "ignored a cosignature message: %s", str(exc))
        return self._unwitnessed(payload, cp.size) or cp

    def _other_origin(self, payload: bytes) -> str | None:
        """The origin a readable checkpoint names when it is not this device's, else None."""
        if self.origin is None:
            return None
        try:
            origin = checkpoint_origin(payload)
        except NoteError:
            return None
        return origin if origin != self.origin else None

    def _unwitnessed(self, payload: bytes, size: int) -> tuple[str, ...] | None:
        """Why a copy without a valid cosignature by a configured witness is refused, or None."""
        if not self.witnesses:
            return None
        bad: list[str] = []
        for name, key in self.witnesses:
            try:
                if find_cosignature(payload, name, key) is not None:
                    return None
            except NoteError:
                bad.append(name)
        if bad:
            return ("forged", f"ignored a cosigned checkpoint of size {size}: its cosignature by "
                    f"{', '.join(bad)} does not verify")
        listed = ", ".join(f"{n} key ID {cosigner_key_id(n, k).hex()}" for n, k in self.witnesses)
        found = "; ".join(cosigners(payload)) or "none"
        return ("unwitnessed", f"ignored a cosigned checkpoint of size {size}: no cosignature by a "
                f"witness of audit.witnesses ({listed}); cosignatures found: {found}")

    def _no_room(self, size: int, length: int) -> tuple[str, ...] | None:
        if self._per_size[size] >= MAX_PER_SIZE:
            return ("copies", f"ignored a cosigned checkpoint of size {size}: {MAX_PER_SIZE} copies of it "
                    "are kept already")
        if self._bytes + length > MAX_FILE_BYTES:
            self._compact()
        return None
