"""Freed frame buffers go back to the kernel instead of staying, pixels intact, in the heap.

The agent zeroes its own frames, but the decoders keep their own: FFmpeg's decoded picture and
OpenCV's converted BGR copy, libcamera's and V4L2's buffers. When capture pauses the camera is
released and those buffers are freed, but glibc's allocator keeps freed memory in the process
for reuse, unzeroed: measured here, the last decoded rows of a clip stay readable in the
process after ``VideoCapture.release()``. glibc serves an allocation at or above
``M_MMAP_THRESHOLD`` with its own mapping and unmaps it on free, and the kernel zeroes pages
before it hands them out again, but it raises that threshold by itself to the size of the
largest buffer freed (up to 32 MiB), after which frames come from the heap. Fixing the
threshold at 128 KiB with ``mallopt`` (which also turns that adjustment off) keeps every frame-
sized buffer in a mapping of its own, gone from the process when freed. The cost is one
mmap/munmap pair per large allocation (a few per frame).

glibc only (Debian, Raspberry Pi OS); elsewhere it reports that it did nothing.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""From <malloc.h>."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's default starting value: a BGR frame of about 210 x 210 or more is above it (160 x 120
is 57,600 bytes, under it: docs/cameras.md says what the guard does not cover)."""


def unmap_freed_frames() -> bool:
    """Fix glibc's mmap threshold so large buffers are unmapped when freed; True if it was set."""
    try:
        libc = ctypes.CDLL(None)  # the C library already loaded (no ldconfig child, no subprocess)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.warning("not glibc: freed decoder buffers may stay in the heap until reused")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        logger.warning("mallopt(M_MMAP_THRESHOLD) refused: freed decoder buffers may stay in the heap")
        return False
    logger.debug("buffers of %d bytes or more are unmapped when freed", MMAP_THRESHOLD_BYTES)
    return True
