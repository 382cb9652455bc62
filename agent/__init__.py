"""emotion-agent: facial-emotion statistics that never keep an image.

Importing this package probes no device and reads no file. It does one thing first: it sets
``OPENCV_IO_MAX_IMAGE_PIXELS`` (unless already set), which OpenCV reads once, when it loads,
and which agent modules load right after: an image over ``MAX_IMAGE_PIXELS`` is then refused
before it is decoded. Set any later, it is ignored: a 1 MB PNG declaring 20000 x 20000 pixels
was decoded (7.4 GB of memory, an out-of-memory kill on a Pi).
"""

import os

__version__ = "0.1.0"

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Decoded images above 64 Mpx (192 MiB as BGR) are refused by OpenCV (a decompression bomb)."""

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
