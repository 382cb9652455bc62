"""A full disk for tests: every durable write in ``agent.atomic`` draws from a byte budget.

When the budget runs out mid-write the bytes that fit are written and the call fails with
``ENOSPC``, as a real file system does; ``free`` gives space back. SQLite writes through its
own C layer, so the spool is filled differently (``PRAGMA max_page_count``, which makes SQLite
answer "database or disk is full", SQLITE_FULL, exactly as on a full disk).
"""

from __future__ import annotations

import errno
import os

import pytest

import agent.atomic


class FullDisk:
    """Installed with ``monkeypatch``; ``left`` is None for unlimited space."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, left: int | None = None) -> None:
        self.left = left
        self.refused = 0
        monkeypatch.setattr(agent.atomic, "_write_all", self._write_all)

    def fill(self) -> None:
        self.left = 0

    def free(self) -> None:
        self.left = None

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.left is not None and self.left < len(view):
                if self.left:
                    written = os.write(fd, view[: self.left])
                    self.left -= written
                self.refused += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = os.write(fd, view)
            if self.left is not None:
                self.left -= written
            view = view[written:]
