"""``split_notes`` scans a checkpoints file without a list of its lines: the same notes and tail
as before, at the memory of the notes. Appending newlines to a 10 MB ``checkpoints.log`` made
``audit verify`` use 1 GB (a list entry per line), 40 MB 3.9 GB (found by a hostile-input probe)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from agent.audit.note import SIG_PREFIX, split_notes


def reference(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The previous implementation, line list and all, as the specification."""
    notes: list[tuple[int, bytes]] = []
    lines = data.split(b"\n")
    tail = lines.pop()
    start, i = 0, 0
    sig = SIG_PREFIX.encode("utf-8")
    while i < len(lines):
        if lines[i] == b"" and i > start:
            j = i + 1
            while j < len(lines) and lines[j].startswith(sig):
                j += 1
            if j > i + 1:
                notes.append((start + 1, b"\n".join(lines[start:j]) + b"\n"))
                start = i = j
                continue
        i += 1
    rest = b"\n".join(lines[start:])
    if start < len(lines):
        rest += b"\n"
    return notes, rest + tail


PIECES = [b"", b"\n", b"origin\n", b"12\n", b"root=\n", SIG_PREFIX.encode() + b"dev abc=\n",
          SIG_PREFIX.encode() + b"w1 xyz", b"x", b"\n\n", SIG_PREFIX.encode()]


@pytest.mark.parametrize("seed", range(300))
def test_the_same_notes_and_tail_as_the_line_list_gave(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test inputs, not secrets
    data = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 40)))
    assert split_notes(data) == reference(data)


def test_a_real_checkpoints_file_splits_as_before() -> None:
    note = b"emotion-agent/d\n5\nroot=\n\n" + SIG_PREFIX.encode() + b"emotion-agent/d sig=\n"
    data = note * 3 + b"emotion-agent/d\n6\nro"
    assert split_notes(data) == reference(data)
    assert len(split_notes(data)[0]) == 3


def test_ten_megabytes_of_newlines_cost_no_more_than_a_few_times_the_file() -> None:
    code = (
        "import resource\nfrom agent.audit.note import split_notes\n"
        "data = b'\\n' * 10_000_000\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "split_notes(data)\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    grown_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True, timeout=120).stdout)
    assert grown_kib < 40_000, f"split_notes grew the peak RSS by {grown_kib} KiB for 10 MB of newlines"
