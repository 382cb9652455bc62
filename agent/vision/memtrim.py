"""Give back the library pages the process mapped but does not use (Linux; a no-op elsewhere).

About half of the agent's resident memory is code and read-only data of shared libraries
(OpenCV's ``cv2.abi3.so`` alone 27 MB of 74), mapped in 64 KB "fault-around" blocks as the
imports touch them; most of it is never used again. For each read-only file mapping that holds
no private (copied-on-write) page, ``madvise(MADV_RANDOM)`` turns fault-around off and
``madvise(MADV_DONTNEED)`` drops its pages: they are clean copies of the file in the page
cache, which the kernel may drop at any time anyway, and a page that is used again faults back
in from the cache (4 KB at a time, a minor fault). Anonymous memory (heap, arrays, the models'
arenas) is never touched. docs/vision.md has the figures.
"""

from __future__ import annotations

import ctypes
import logging
import sys
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


def trim_file_pages() -> int:
    """Drop the pages of read-only file mappings; the number of mappings trimmed (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        text = SMAPS.read_text(encoding="utf-8")
    except OSError:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    trimmed = 0
    for lo, hi in read_only_file_mappings(text):
        libc.madvise(lo, hi - lo, MADV_RANDOM)
        trimmed += libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0
    logger.debug("trimmed %d read-only file mappings", trimmed)
    return trimmed
