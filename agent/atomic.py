"""Durable file writes, in one place so every state file gets the same crash guarantees.

``write_atomic`` replaces a file so that after a crash or power loss it holds either the old
or the new content: write a sibling ``NAME.tmp``, fsync it, rename it over ``NAME``, fsync
the folder (the rename itself is only durable once the directory entry is on disk).
``write_new`` creates a file that must not exist yet (keys, bundles) and fsyncs it;
``append_durable`` adds to an ``O_APPEND`` file (the audit log's segments) and fsyncs it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to the disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fill(fd: int, data: bytes, mode: int) -> None:
    """Give a fresh file exactly ``mode`` and all of ``data``, flush it to the disk, close it."""
    try:
        os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durable(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of an O_APPEND file and flush it to the disk."""
    _write_all(fd, data)
    os.fsync(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content.

    The temporary file is ``path`` + ``.tmp``: whatever is there (a leftover from a crash, or a
    symlink someone planted) is unlinked and a new file created with O_EXCL | O_NOFOLLOW, so
    the write never goes through a link to another file (if one reappears in between, the open
    fails instead). It is removed if this write fails; the result has exactly ``mode``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        _fill(fd, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never overwrite, never follow a link) with exactly ``mode``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    _fill(fd, data, mode)
