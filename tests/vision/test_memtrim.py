"""Dropping unused library pages: only clean read-only file mappings, and RSS really falls."""

from __future__ import annotations

import subprocess
import sys

from agent.vision.memtrim import read_only_file_mappings

SMAPS = """\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/lib/libfoo.so
Rss:                 320 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw
00651000-00652000 r--p 00051000 08:02 173521      /usr/lib/libfoo.so
Rss:                   4 kB
Anonymous:             4 kB
00652000-00655000 rw-p 00052000 08:02 173521      /usr/lib/libfoo.so
Rss:                  12 kB
Anonymous:            12 kB
01a3c000-01a5d000 rw-p 00000000 00:00 0           [heap]
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000100000 r--p 00000000 08:02 99  /models/face.tflite
Rss:                1024 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
"""


def test_only_unmodified_read_only_file_mappings_are_chosen() -> None:
    """Code and a read-only model file, not RELRO (read-only but relocated: anonymous pages),
    not writable data, not the heap or anonymous memory."""
    assert read_only_file_mappings(SMAPS) == [(0x400000, 0x452000), (0x7F0000000000, 0x7F0000100000)]


PROBE = """
import cv2, numpy as np
from agent.vision.memtrim import trim_file_pages
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
