#!/usr/bin/env python3
"""Fetch the real test images, pinned by package version and sha256, into .cache/media.

Faces: scikit-image's astronaut (NASA, public domain) and insightface's group photo t1.jpg
(six people), and insightface's tight 112 x 112 portrait Tom_Hanks_54745.png (robustness
report, tight-crop recall). Non-faces: scikit-image's cat, coffee, rocket, text, logo, page, horse and
motorbike, for measuring false detections.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheelpin import ROOT, Pin, extract

MEDIA_DIR = ROOT / ".cache" / "media"

SKIMAGE = ("scikit-image", "0.26.0")
INSIGHTFACE = ("insightface", "2.1")

PINS = [
    Pin(*SKIMAGE, "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "astronaut.png"),
    Pin(*SKIMAGE, "skimage/data/camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", "camera.png"),
    Pin(*SKIMAGE, "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "chelsea.png"),
    Pin(*SKIMAGE, "skimage/data/coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "coffee.png"),
    Pin(*SKIMAGE, "skimage/data/rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "rocket.jpg"),
    Pin(*SKIMAGE, "skimage/data/text.png",
        "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1", "text.png"),
    Pin(*SKIMAGE, "skimage/data/logo.png",
        "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168", "logo.png"),
    Pin(*SKIMAGE, "skimage/data/page.png",
        "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3", "page.png"),
    Pin(*SKIMAGE, "skimage/data/horse.png",
        "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455", "horse.png"),
    Pin(*SKIMAGE, "skimage/data/motorcycle_left.png",
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179", "motorcycle.png"),
    Pin(*INSIGHTFACE, "insightface/data/images/t1.jpg",
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "group6.jpg"),
    Pin(*INSIGHTFACE, "insightface/data/images/Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", "tom_hanks.png"),
]


def main() -> int:
    for pin in PINS:
        extract(pin, MEDIA_DIR)
    print(f"{len(PINS)} pinned media files in {MEDIA_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
