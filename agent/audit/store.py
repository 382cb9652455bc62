"""Files of the audit directory: segment names, reading lines, atomic and durable writes.

Layout of ``state_dir/audit/``::

    segment-000000000000.jsonl   entries 0.. (first line: a ``segment`` entry)
    segment-000000010000.jsonl   entries 10000.. (named by the index of its first entry)
    state.json                   size and right edge of the tree (agent.atomic.write_atomic)
    checkpoints.log              signed checkpoint notes, one after the other
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.user_files import file_kind

SEGMENT_RE = re.compile(r"^segment-([0-9]{12})\.jsonl\Z")
STATE_FILE = "state.json"
CHECKPOINTS_FILE = "checkpoints.log"


def segment_name(first: int) -> str:
    return f"segment-{first:012d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first index, path) of every segment file, oldest first."""
    found = []
    for path in directory.iterdir():
        m = SEGMENT_RE.fullmatch(path.name)  # not "…jsonl\n": `$` matches before a newline
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


@dataclass(frozen=True)
class SegmentLines:
    """A segment's complete lines (without newlines) and any partial tail left by a crash."""

    lines: list[bytes]
    tail: bytes

    @property
    def complete_bytes(self) -> int:
        return sum(len(line) + 1 for line in self.lines)


def open_regular(path: Path) -> IO[bytes]:
    """Open a file of the log for reading, refusing anything but a regular file *before* it
    is read: a FIFO named like a segment would block forever, ``/dev/zero`` never ends. The
    refusal is an OSError (EINVAL) whose ``strerror`` says what the path is instead."""
    _regular(path, os.stat(path).st_mode)  # follows a link: a link to /dev/zero is a device
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        _regular(path, os.fstat(fd).st_mode)  # swapped between stat and open
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file", str(path))


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as f:
        return f.read()


def read_segment(path: Path) -> SegmentLines:
    data = read_regular(path)
    parts = data.split(b"\n")
    return SegmentLines(parts[:-1], parts[-1])


def iter_lines(path: Path) -> Iterator[bytes]:
    """Complete lines of a segment, streamed (a partial tail is not yielded)."""
    with open_regular(path) as f:
        for raw in f:
            if raw.endswith(b"\n"):
                yield raw[:-1]


def load_state(directory: Path) -> dict[str, Any] | None:
    """The saved right edge, or None when missing or unreadable (it is only a cache)."""
    try:
        obj = json.loads(read_regular(directory / STATE_FILE))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
