"""Give back the library pages the process mapped but does not use (Linux; a no-op elsewhere).

About half of the agent's resident memory is code and read-only data of shared libraries
(OpenCV's ``cv2.abi3.so`` alone 27 MB of 74), mapped in large blocks as the imports touch them;
most of it is never used again. For each read-only file mapping that holds no private
(copied-on-write) page, ``madvise(MADV_RANDOM)`` turns read-ahead off and
``madvise(MADV_DONTNEED)`` drops its pages: they are clean copies of the file in the page
cache, which the kernel may drop at any time anyway. The files' cached pages that no process
maps are dropped as well (``posix_fadvise(DONTNEED)``): a kernel that caches a file in large
folios (ext4 on Linux 6.18 here, for a library freshly written by ``pip``) maps the whole folio
back when one of its pages runs again, and one OpenCV call after a trim brought 19 MB back.
Dropped, a page used again maps only the 64 KB around it (the kernel's fault-around), though
the kernel may still read more of the file into its cache (one byte of cryptography's library
read 1-3 MB on this VM's kernel 6.18, of which 52 KB were mapped). glibc's heap gives its free memory back
too (``malloc_trim``: a closed 1080p decoder leaves about 18 MB free in it). Anonymous memory
in use (arrays, the models' arenas) is never touched. docs/vision.md has the figures.

A mapping is trimmed only if it was the same at the previous look (``settled``): a library
another thread is loading at that moment is not. ``rare_task()`` trims before and after a task
that runs once a window (its messages, signatures and audit entries) or once a checkpoint is
due, so that task's library pages and the frames' are not mapped together.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MADV_RANDOM = 1
MADV_DONTNEED = 4
SMAPS = Path("/proc/self/smaps")
SETTLE_S = 0.02
"""How long a mapping first seen must stay the same before it is trimmed (``settled``): far
longer than a library loader keeps its first, whole, read-only mapping of a file."""


@dataclass(frozen=True, slots=True)
class FileMapping:
    """A mapping of a file that is not writable and has no anonymous (private, modified) page,
    in memory or swapped out (smaps counts those apart, as ``Swap``): its pages can be dropped
    and read back unchanged."""

    lo: int
    hi: int
    head: str
    """Its first line in smaps (range, permissions, offset, device, inode, path): what it is."""
    path: str


def file_mappings(smaps_lines: Iterable[str]) -> list[FileMapping]:
    """The droppable mappings of ``/proc/PID/smaps``, read line by line (the file is about
    1 MB of text in ``run``; held whole, twice at a trim, it raised the start-up peak by 1 MB)."""
    out: list[FileMapping] = []
    current: FileMapping | None = None
    for line in smaps_lines:
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:  # a mapping's first line: range perms offset dev inode path
            fields = rest.split()
            path = " ".join(fields[4:])
            lo, hi = (int(x, 16) for x in head.split("-"))
            droppable = "w" not in fields[0] and path.startswith("/")
            current = FileMapping(lo, hi, line.rstrip("\n"), path) if droppable else None
        elif head in {"Anonymous:", "Swap:"} and current is not None:
            if int(rest.split()[0]) != 0:
                current = None  # private pages, in memory or in swap: dropped, they would be lost
            elif head == "Swap:":
                out.append(current)
                current = None
    return out


def settled(maps: list[FileMapping], seen: frozenset[str]) -> list[FileMapping]:
    """The ``maps`` that were the same at the last look (``seen``: their ``head``s). A library
    that another thread is loading right now is first mapped read-only whole, then its
    segments are mapped over that and its data relocated (written: private pages); dropped
    after that, those writes would be lost. A mapping seen unchanged at two looks (at least
    ``SETTLE_S`` apart) is not such a passing one, unless the loading thread stalled that long
    between two of its calls: a library Python imports is loaded under the GIL, which the trim
    also holds, but one a native thread loads (an OpenCV plugin, a name-service module) is not."""
    return [m for m in maps if m.head in seen]


def _look() -> list[FileMapping]:
    with SMAPS.open(encoding="utf-8") as f:
        return file_mappings(f)


_DROPPED: set[str] = set()
"""Files whose cache this process dropped already: once is enough (the pages then come back
4 KB at a time), and each drop makes the next use of every page a read from the disk."""


def drop_cached_pages(path: str) -> bool:
    """Ask the kernel to drop the file's cached pages that no process maps (clean copies).

    Since Linux 6.16 ext4 caches a freshly written file (a library ``pip`` just installed) in
    large folios, and a fault maps the whole folio: one call into OpenCV after a trim mapped
    19 MB of ``cv2.abi3.so`` again, a clip 35 MB. Dropped, a page used again maps only itself
    and the cached pages around it (``tests/test_memtrim.py``: 4 KB of a freshly written file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


_LAST_SEEN: frozenset[str] = frozenset()
"""The ``head``s of the droppable mappings at this process's last look."""


def trim_file_pages() -> int:
    """Drop the pages of read-only file mappings, and the files' unmapped cached pages; give
    the heap's free memory back (glibc); the number of mappings trimmed (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    global _LAST_SEEN  # noqa: PLW0603 - one process, one list of its mappings
    try:
        maps, seen = _look(), _LAST_SEEN
        if any(m.head not in seen for m in maps):
            # New since the last look (the first trim, a library or model just loaded): look
            # again a moment later rather than leave them mapped until the next trim.
            time.sleep(SETTLE_S)
            maps, seen = _look(), frozenset(m.head for m in maps)
    except OSError:
        return 0
    _LAST_SEEN = frozenset(m.head for m in maps)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if hasattr(libc, "malloc_trim"):  # glibc: freed decoder buffers stay in the heap otherwise
        libc.malloc_trim(0)
    trimmed = 0
    ready = settled(maps, seen)
    for m in ready:
        libc.madvise(m.lo, m.hi - m.lo, MADV_RANDOM)
        trimmed += libc.madvise(m.lo, m.hi - m.lo, MADV_DONTNEED) == 0
    fresh = [path for path in dict.fromkeys(m.path for m in ready) if path not in _DROPPED]
    _DROPPED.update(fresh)
    dropped = sum(drop_cached_pages(path) for path in fresh)
    logger.debug("trimmed %d read-only file mappings, dropped the cache of %d files", trimmed, dropped)
    return trimmed


@contextmanager
def rare_task() -> Iterator[None]:
    """Run a task that comes once a window (signing and publishing its messages, appending and
    checkpointing its audit entries) or once a checkpoint is due by time, with the library
    pages the frames run trimmed before it, and the pages it ran trimmed after it. Rarer audit
    entries outside these (a command, a privacy-mode change, a camera failure) are not wrapped:
    what they map stays until the next window's trim.

    Each kind of work keeps the pages it ran mapped until the next trim, and a page maps 64 KB
    of its library around it (the kernel's fault-around), so the resident set of ``run`` grew
    to the sum of both sets: with a 1080p clip, the frames' 15-19 MB (OpenCV, LiteRT, numpy,
    FFmpeg) plus the window's 4.4 MB (cryptography's Rust library 2.4, pydantic-core 1.2,
    OpenSSL's hashes 0.6), a peak of 101.6 MB with MQTT on. Apart, the file-backed part peaks
    at 19.6 MB and the whole at 96.1-96.4 MB (docs/vision.md, "Memory"). The cost is two trims
    a window (about 16 ms each at 1080p, most of it reading ``/proc/self/smaps``) and the
    frames' pages read back from the page cache after it (0.3 ms on the next frame)."""
    trim_file_pages()
    try:
        yield
    finally:
        trim_file_pages()
