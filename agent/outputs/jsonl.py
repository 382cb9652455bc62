"""JSON-lines output: one ``{"topic": ..., "payload": {...}}`` object per line.

This is the shape ``emotion-agent verify`` reads, so a facility can pipe the agent's stdout (or
the file) straight into a verifier. A file is opened in append mode with 0600 permissions and
written unbuffered: a write the disk refuses is cut back to the last whole line and raises, so
the publisher keeps the message and no half line is left for a later one to follow.

The file grows by one line per message (about 1.4 MB a day with 60 s windows) and is not the
agent's to delete, so it can be rotated from outside: logrotate's default (move, then a new
file) and ``copytruncate`` both work. Before each line the agent checks that the path still names
the file it has open, and opens the path again when it was moved or removed (before, it wrote
on into the moved file forever, found by review).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from agent.outputs.base import Message


class JsonLinesOutput:
    """Writes each message as a JSON line; ``path`` None or "-" means stdout."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = None if path in (None, "-") else Path(str(path))
        self._stream: TextIO | None = None
        self._fd = -1
        self.sent = 0

    def start(self) -> None:
        if self._path is None:
            self._stream = sys.stdout
            return
        self._fd = self._open(self._path)

    @staticmethod
    def _open(path: Path) -> int:
        """The file, opened to append; OSError for anything but a regular file. Non-blocking, so
        a FIFO put in its place (after the start's checks) fails here instead of blocking the
        loop until a reader comes."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return fd

    def _follow_rotation(self, path: Path) -> None:
        """Open ``path`` again when it no longer names the open file (moved away, removed)."""
        held = os.fstat(self._fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return
        fd = self._open(path)  # raises before the old one is dropped: the message stays queued
        os.close(self._fd)
        self._fd = fd

    def send(self, message: Message) -> None:
        payload = json.loads(message.payload)
        line = json.dumps({"topic": message.topic, "payload": payload}, separators=(",", ":"))
        if self._fd >= 0 and self._path is not None:
            self._follow_rotation(self._path)
            self._append(line.encode("utf-8") + b"\n")
        elif self._stream is not None:
            self._stream.write(line + "\n")
            self._stream.flush()
        else:
            raise RuntimeError("JsonLinesOutput.send before start")
        self.sent += 1

    def _append(self, data: bytes) -> None:
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            os.ftruncate(self._fd, size)
            raise

    def stop(self, timeout: float = 0.0) -> None:
        """Closes the file at once: nothing to wait for, whatever ``timeout`` allows."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._stream = None
