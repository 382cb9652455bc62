"""Dropping unused library pages: only clean read-only file mappings, and RSS really falls."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from agent import memtrim
from agent.memtrim import file_mappings, settled

SMAPS = """\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/lib/libfoo.so
Rss:                 320 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me dw
00651000-00652000 r--p 00051000 08:02 173521      /usr/lib/libfoo.so
Rss:                   4 kB
Anonymous:             4 kB
00652000-00655000 rw-p 00052000 08:02 173521      /usr/lib/libfoo.so
Rss:                  12 kB
Anonymous:            12 kB
00700000-00710000 r--p 00060000 08:02 173521      /usr/lib/libfoo.so
Rss:                   0 kB
Anonymous:             0 kB
Swap:                 64 kB
01a3c000-01a5d000 rw-p 00000000 00:00 0           [heap]
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000100000 r--p 00000000 08:02 99  /models/face.tflite
Rss:                1024 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
"""


def test_only_unmodified_read_only_file_mappings_are_chosen() -> None:
    """Code and a read-only model file, not RELRO (read-only but relocated: anonymous pages,
    or all of them swapped out: found by review), not writable data, not the heap or anonymous
    memory."""
    assert [(m.lo, m.hi) for m in file_mappings(SMAPS.splitlines())] == [
        (0x400000, 0x452000), (0x7F0000000000, 0x7F0000100000)
    ]


PROBE = """
import cv2, numpy as np
from agent.memtrim import trim_file_pages
def rss():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Rss:'):
            return int(line.split()[1]) // 1024
img = np.zeros((360, 640, 3), np.uint8)
cv2.resize(cv2.GaussianBlur(img, (5, 5), 1), (192, 108))
before = rss()
assert trim_file_pages() > 10
after = rss()
out = cv2.resize(cv2.GaussianBlur(img + 1, (5, 5), 1), (192, 108))  # the code faults back in
print(before, after, int(out.sum()))
"""


def test_trimming_lowers_rss_and_the_libraries_still_run() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after, total = (int(v) for v in done.stdout.split())
    assert after < before - 15, (before, after)  # OpenCV + numpy alone map ~40 MB of library pages
    assert total == 192 * 108 * 3


def test_the_files_behind_trimmed_mappings_are_named() -> None:
    paths = [m.path for m in file_mappings(SMAPS.splitlines())]
    assert paths == ["/usr/lib/libfoo.so", "/models/face.tflite"]


REFAULT_PROBE = """
import mmap, os, sys
from agent.memtrim import trim_file_pages
path = sys.argv[1]
with open(path, 'wb') as f:  # freshly written: cached as pip leaves a library it installed
    for i in range(64):
        f.write(bytes([i + 1]) * (1 << 17))
    f.flush()
    os.fsync(f.fileno())  # written back, as an installed library is by the time the agent runs
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
def rss_kb():
    lo = None
    for line in open('/proc/self/smaps'):
        head, _, rest = line.partition(' ')
        if '-' in head and ':' not in head:
            lo = rest.split()[-1] == path
        elif head == 'Rss:' and lo:
            return int(rest.split()[0])
    raise SystemExit('mapping not found')
total = sum(m[i] for i in range(0, len(m), 4096))  # every page in use, as an import leaves code
before = rss_kb()
trim_file_pages()
after = rss_kb()
again = m[len(m) // 2 + 100]  # one page used again
print(before, after, rss_kb(), total, again)
"""


def test_a_page_used_again_after_the_trim_comes_back_alone(tmp_path: Path) -> None:
    """A trimmed library page that runs again maps only itself back, not the large block the
    file was cached in (one OpenCV call after a trim brought back 19 MB of cv2.abi3.so)."""
    path = tmp_path / "lib.so"
    done = subprocess.run(
        [sys.executable, "-c", REFAULT_PROBE, str(path)], capture_output=True, text=True, check=True
    )
    before, after, refault, _, again = (int(v) for v in done.stdout.split())
    assert (before, after, again) == (8192, 0, 33)  # all 8 MB mapped, all dropped, data intact
    assert refault <= 16, refault  # the page itself (4 KB); 128 KB when the cache was kept


LOADING = """\
00400000-00655000 r--p 00000000 08:02 173521      /usr/lib/libfoo.so
Rss:                   8 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000000000-7f0000100000 r--p 00000000 08:02 99  /models/face.tflite
Rss:                1024 kB
Anonymous:             0 kB
Swap:                  0 kB
"""
"""An earlier look, while another thread was loading libfoo: mapped whole and read-only, its
segments not yet mapped over it nor its data relocated."""


def test_only_mappings_unchanged_since_the_last_look_are_trimmed() -> None:
    """libfoo's code was not there at the last look (the loader's whole read-only mapping was):
    it waits for the next trim; the model file, the same at both looks, is trimmed."""
    seen = frozenset(m.head for m in file_mappings(LOADING.splitlines()))
    now = file_mappings(SMAPS.splitlines())
    assert [(m.lo, m.hi) for m in settled(now, seen)] == [(0x7F0000000000, 0x7F0000100000)]
    assert settled(now, frozenset(m.head for m in now)) == now


class Call:
    """A ctypes function stand-in: callable, with ``argtypes`` to set."""

    def __init__(self, fn: Callable[..., int]) -> None:
        self.fn, self.argtypes = fn, None

    def __call__(self, *args: int) -> int:
        return self.fn(*args)


class FakeLibc:
    """What ``trim_file_pages`` calls of libc, recorded instead of done."""

    dropped: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, name: object = None, use_errno: bool = False) -> None:
        self.madvise = Call(self._madvise)

    @staticmethod
    def _madvise(lo: int, size: int, advice: int) -> int:
        if advice == memtrim.MADV_DONTNEED:
            FakeLibc.dropped.append((lo, lo + size))
        return 0

    def malloc_trim(self, pad: int) -> int:
        return 0


def test_a_trim_drops_only_what_it_saw_twice_and_looks_again_at_what_is_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """First look: libfoo half loaded (its whole read-only mapping); the look after the pause:
    loaded. Only the model file, the same at both, is dropped; the next trim drops both."""
    looks = [LOADING, SMAPS, SMAPS, SMAPS]
    pauses: list[float] = []
    monkeypatch.setattr(memtrim, "_look", lambda: file_mappings(looks.pop(0).splitlines()))
    monkeypatch.setattr(memtrim, "_LAST_SEEN", frozenset())
    monkeypatch.setattr(memtrim.time, "sleep", pauses.append)
    monkeypatch.setattr(memtrim.ctypes, "CDLL", FakeLibc)
    monkeypatch.setattr(memtrim, "drop_cached_pages", lambda path: True)
    monkeypatch.setattr(FakeLibc, "dropped", [])
    assert memtrim.trim_file_pages() == 1
    assert FakeLibc.dropped == [(0x7F0000000000, 0x7F0000100000)]
    assert pauses == [memtrim.SETTLE_S]
    FakeLibc.dropped.clear()
    assert memtrim.trim_file_pages() == 2  # nothing new: one look, no pause
    assert FakeLibc.dropped == [(0x400000, 0x452000), (0x7F0000000000, 0x7F0000100000)]
    assert pauses == [memtrim.SETTLE_S]
    assert looks == [SMAPS]
