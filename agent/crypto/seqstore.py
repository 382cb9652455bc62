"""Boot counter and message sequence numbers that are never reused, even after power loss.

The state file holds ``{"boot": B, "seq_reserved": R}``: every sequence number below R may
already have been handed out. Opening the store increments the boot counter and reserves a
block ``[R, R + block)`` *before* handing out any number from it; when a block is used up the
next one is reserved the same way. Each update is written to a temporary file, fsynced,
renamed over the old one and the directory fsynced, so after a crash or power loss the file
is either the old or the new state, and the next start skips the rest of the block. A crash
costs at most one block of unused numbers (a gap a verifier sees at the boot change).

A lock file (``flock``) keeps two signers from sharing one state folder.

``floor`` (the last boot and the highest sequence number the audit log has seen used) repairs a
state file that was deleted or rolled back: a boot or reservation below it is raised above it
(plus one block, for numbers handed out but not yet audited) instead of reusing numbers a
receiver has already accepted; ``rebuilt`` then says what was changed, for the audit log.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import IO, Protocol

from agent.atomic import write_atomic
from agent.crypto.canonical import MAX_SAFE_INT
from agent.errors import KeyFileError, PayloadError

STATE_NAME = "signer-state.json"
LOCK_NAME = "signer-state.lock"
DEFAULT_BLOCK = 256


class SequenceStore(Protocol):
    """Where a Signer gets its boot number and fresh sequence numbers."""

    @property
    def boot(self) -> int: ...

    def next_seq(self) -> int: ...

    def close(self) -> None: ...


class MemorySequenceStore:
    """An honest in-memory fake: same numbering, nothing persisted (tests, dry runs)."""

    def __init__(self, boot: int = 1, first_seq: int = 1) -> None:
        self._boot = boot
        self._next = first_seq
        self._lock = threading.Lock()

    @property
    def boot(self) -> int:
        return self._boot

    def next_seq(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            return seq

    def close(self) -> None:
        return None


class FileSequenceStore:
    """The persisted store in ``state_dir``; opening it starts a new boot."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        block: int = DEFAULT_BLOCK,
        floor: tuple[int, int] | None = None,
    ) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self._dir = Path(state_dir)
        self._path = self._dir / STATE_NAME
        self._block = block
        self._mutex = threading.Lock()
        self.rebuilt: str | None = None
        self._lock_file = self._acquire_lock()
        try:
            boot, reserved = self._read()
            if floor is not None:
                boot, reserved = self._raise_to(floor, boot, reserved)
            self._boot = boot + 1
            self._next = reserved
            self._reserved = reserved
            self._reserve()
        except BaseException:
            self.close()
            raise

    def _acquire_lock(self) -> IO[bytes]:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            handle = os.fdopen(fd, "ab")
        except OSError as exc:
            raise KeyFileError(f"{self._dir}: cannot use the signer state folder: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise KeyFileError(
                f"{self._dir}: another signer holds this state folder; two signers would reuse "
                "sequence numbers"
            ) from exc
        return handle

    def _read(self) -> tuple[int, int]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, 1
        except (OSError, ValueError) as exc:  # a folder, a device, not UTF-8
            raise self._unreadable(f"{type(exc).__name__}: {exc}") from exc
        try:
            data = json.loads(text)
            boot, reserved = data["boot"], data["seq_reserved"]
        except RecursionError as exc:
            raise self._unreadable("JSON nested too deeply") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unreadable(f"{type(exc).__name__}: {exc}") from exc
        if type(boot) is not int or type(reserved) is not int or boot < 0 or reserved < 1:
            raise self._unreadable("boot and seq_reserved must be non-negative integers")
        if max(boot, reserved) > MAX_SAFE_INT:  # else every signed message fails, naming no file
            raise self._unreadable(f"boot and seq_reserved must be at most 2**53 - 1 ({MAX_SAFE_INT})")
        return boot, reserved

    def _raise_to(self, floor: tuple[int, int], boot: int, reserved: int) -> tuple[int, int]:
        last_boot, last_seq = floor
        if boot >= last_boot and reserved > last_seq:
            return boot, reserved
        found = "missing" if not self._path.exists() else f"at boot {boot}, next seq {reserved}"
        new_boot, new_reserved = max(boot, last_boot), max(reserved, last_seq + 1 + self._block)
        self.rebuilt = (
            f"{STATE_NAME} was {found}, behind the audit log (boot {last_boot}, seq {last_seq}); "
            f"continuing from boot {new_boot + 1}, seq {new_reserved}"
        )
        return new_boot, new_reserved

    def _unreadable(self, why: str) -> PayloadError:
        return PayloadError(
            f"{self._path}: signer state is unreadable ({why}); refusing to guess, since a wrong "
            "guess reuses sequence numbers. Restore the file or generate a new key."
        )

    def _reserve(self) -> None:
        reserved = self._reserved + self._block
        state = {"boot": self._boot, "seq_reserved": reserved}
        write_atomic(self._path, (json.dumps(state) + "\n").encode("ascii"))
        self._reserved = reserved

    @property
    def boot(self) -> int:
        return self._boot

    @property
    def path(self) -> Path:
        return self._path

    def next_seq(self) -> int:
        """A number never handed out before; reserves a new block on disk first if needed."""
        with self._mutex:
            if self._next >= self._reserved:
                self._reserve()
            seq = self._next
            self._next += 1
            return seq

    def close(self) -> None:
        handle = getattr(self, "_lock_file", None)
        if handle is not None and not handle.closed:
            handle.close()
