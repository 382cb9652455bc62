"""A measured check that state_dir holds no image: every file's first bytes against the
signatures of image and video formats, at each window close (the ``frames`` audit entry).

What it catches: an encoded picture or clip written anywhere under state_dir (a debug snapshot,
a library's cache, a dumped array in NumPy's format). What it cannot: raw pixel bytes with no
header, or an image inside another file (a database page); that is what the strace test
(``tests/test_no_retention.py``) and the core-dump guard are for. Symbolic links are not
followed; a file that cannot be read is counted as unreadable, not as clean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HEADER_BYTES = 16
MAX_FILES = 100_000
"""Stop after this many files (a state_dir holds a few dozen); the count says how far it got."""


def image_format(header: bytes) -> str | None:
    """The image or video format ``header`` (a file's first bytes) starts, or None."""
    h = header
    magic = (
        ("jpeg", h.startswith(b"\xff\xd8\xff")),
        ("png", h.startswith(b"\x89PNG\r\n\x1a\n")),
        ("gif", h[:6] in (b"GIF87a", b"GIF89a")),
        ("bmp", h.startswith(b"BM") and h[6:10] == b"\0\0\0\0"),
        ("tiff", h[:4] in (b"II*\0", b"MM\0*")),
        ("webp", h.startswith(b"RIFF") and h[8:12] == b"WEBP"),
        ("avi", h.startswith(b"RIFF") and h[8:12] == b"AVI "),
        ("isobmff", h[4:8] == b"ftyp"),  # mp4, mov, heic, avif
        ("matroska", h.startswith(b"\x1a\x45\xdf\xa3")),  # mkv, webm
        ("jpeg2000", h.startswith(b"\0\0\0\x0cjP  ")),
        ("jpegxl", h.startswith((b"\xff\x0a", b"\0\0\0\x0cJXL "))),
        ("pnm", len(h) > 2 and h[0:1] == b"P" and h[1:2] in b"1234567" and h[2:3] in b" \t\r\n"),
        ("numpy", h.startswith(b"\x93NUMPY")),
        ("qoi", h.startswith(b"qoif")),
        ("openexr", h.startswith(b"\x76\x2f\x31\x01")),
    )
    return next((name for name, hit in magic if hit), None)


@dataclass(frozen=True, slots=True)
class StateScan:
    """One scan of state_dir."""

    files: int
    images: int
    unreadable: int = 0
    first_image: str | None = None
    """Path (relative to state_dir) of the first image found, for the log; never its content."""


def scan_state(root: Path, max_files: int = MAX_FILES) -> StateScan:
    """Read the first bytes of every regular file under ``root``."""
    files = images = unreadable = 0
    first: str | None = None
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            if files >= max_files:
                return StateScan(files, images, unreadable, first)
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            files += 1
            try:
                with path.open("rb") as f:
                    header = f.read(HEADER_BYTES)
            except OSError:
                unreadable += 1
                continue
            if image_format(header) is not None:
                images += 1
                first = first or str(path.relative_to(root))
    return StateScan(files, images, unreadable, first)
