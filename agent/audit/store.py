"""Files of the audit directory: segment names, reading lines, atomic and durable writes.

Layout of ``state_dir/audit/``::

    segment-000000000000.jsonl   entries 0.. (first line: a ``segment`` entry)
    segment-000000010000.jsonl   entries 10000.. (named by the index of its first entry)
    state.json                   size and right edge of the tree (agent.atomic.write_atomic)
    checkpoints.log              signed checkpoint notes, one after the other
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEGMENT_RE = re.compile(r"^segment-([0-9]{12})\.jsonl$")
STATE_FILE = "state.json"
CHECKPOINTS_FILE = "checkpoints.log"


def segment_name(first: int) -> str:
    return f"segment-{first:012d}.jsonl"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first index, path) of every segment file, oldest first."""
    found = []
    for path in directory.iterdir():
        m = SEGMENT_RE.match(path.name)
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


def read_segment(path: Path) -> SegmentLines:
    data = path.read_bytes()
    parts = data.split(b"\n")
    return SegmentLines(parts[:-1], parts[-1])


def iter_lines(path: Path) -> Iterator[bytes]:
    """Complete lines of a segment, streamed (a partial tail is not yielded)."""
    with path.open("rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                yield raw[:-1]


def load_state(directory: Path) -> dict[str, Any] | None:
    """The saved right edge, or None when missing or unreadable (it is only a cache)."""
    try:
        obj = json.loads((directory / STATE_FILE).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
