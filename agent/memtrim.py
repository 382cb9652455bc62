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
Dropped, a page used again is read back on its own. glibc's heap gives its free memory back
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

MADV_RANDOM = 1
MADV_DONTNEED = 4
SMAPS = Path("/proc/self/smaps")


def read_only_file_mappings(smaps_text: str) -> list[tuple[int, int]]:
    """(start, end) of every mapping of a file that is not writable and has no anonymous
    (private, modified) page: the ones whose pages can be dropped and read back unchanged."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps_text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:  # a mapping's first line: range perms offset dev inode path
            fields = rest.split()
            path = fields[4] if len(fields) > 4 else ""
            lo, hi = (int(x, 16) for x in head.split("-"))
            current = (lo, hi) if path.startswith("/") and "w" not in fields[0] else None
        elif head == "Anonymous:" and current is not None:
            if int(rest.split()[0]) == 0:
                out.append(current)
            current = None
    return out


def mapping_paths(smaps_text: str, ranges: list[tuple[int, int]]) -> list[str]:
    """The files behind the mappings ``ranges`` (as ``read_only_file_mappings`` gives them)."""
    wanted = set(ranges)
    paths: dict[str, None] = {}
    for line in smaps_text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:
            fields = rest.split()
            lo, hi = (int(x, 16) for x in head.split("-"))
            if (lo, hi) in wanted and len(fields) > 4:
                paths[" ".join(fields[4:])] = None
    return list(paths)


_DROPPED: set[str] = set()
"""Files whose cache this process dropped already: once is enough (the pages then come back
4 KB at a time), and each drop makes the next use of every page a read from the disk."""


def drop_cached_pages(path: str) -> bool:
    """Ask the kernel to drop the file's cached pages that no process maps (clean copies).

    Since Linux 6.16 ext4 caches a freshly written file (a library ``pip`` just installed) in
    large folios, and a fault maps the whole folio: one call into OpenCV after a trim mapped
    19 MB of ``cv2.abi3.so`` again, a clip 35 MB. Dropped, a page is read back on its own, 4 KB
    at a time (the mapping is ``MADV_RANDOM``: no read-ahead)."""
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
"""The mappings (``mapping_heads``) of this process's last look at ``/proc/self/smaps``."""


def mapping_heads(smaps_text: str) -> dict[tuple[int, int], str]:
    """Each mapping's first line (range, permissions, offset, device, inode, path) by its range."""
    heads = {}
    for line in smaps_text.splitlines():
        head = line.partition(" ")[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            heads[lo, hi] = line
    return heads


def settled(
    ranges: list[tuple[int, int]], heads: dict[tuple[int, int], str], seen: frozenset[str]
) -> list[tuple[int, int]]:
    """The ``ranges`` whose mapping (``heads``) is the same as at the last look (``seen``). A
    library that another thread is loading right now is first mapped read-only whole, then its
    segments are mapped over that and its data relocated (written: private pages); dropped
    after that, those writes would be lost. A mapping seen unchanged at two looks (at least
    milliseconds apart) is not such a passing one."""
    return [r for r in ranges if heads.get(r) in seen]


def trim_file_pages() -> int:
    """Drop the pages of read-only file mappings, and the files' unmapped cached pages; give
    the heap's free memory back (glibc); the number of mappings trimmed (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    global _LAST_SEEN  # noqa: PLW0603 - one process, one list of its mappings
    try:
        if not _LAST_SEEN:
            _LAST_SEEN = frozenset(mapping_heads(SMAPS.read_text(encoding="utf-8")).values())
        text = SMAPS.read_text(encoding="utf-8")
    except OSError:
        return 0
    heads = mapping_heads(text)
    seen, _LAST_SEEN = _LAST_SEEN, frozenset(heads.values())
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if hasattr(libc, "malloc_trim"):  # glibc: freed decoder buffers stay in the heap otherwise
        libc.malloc_trim(0)
    trimmed = 0
    ranges = settled(read_only_file_mappings(text), heads, seen)
    for lo, hi in ranges:
        libc.madvise(lo, hi - lo, MADV_RANDOM)
        trimmed += libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0
    fresh = [path for path in mapping_paths(text, ranges) if path not in _DROPPED]
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
    at 19.6 MB and the whole at 97.0-97.5 MB (docs/vision.md, "Memory"). The cost is two trims
    a window (about 16 ms each at 1080p, most of it reading ``/proc/self/smaps``) and the
    frames' pages read back from the page cache after it (0.3 ms on the next frame)."""
    trim_file_pages()
    try:
        yield
    finally:
        trim_file_pages()
