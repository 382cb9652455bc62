"""Fixtures for camera tests: a short video and an image folder written on the fly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from camhelpers import write_video


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", frames=6)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for name, level in [("b.png", 100), ("a.jpg", 50), ("c.bmp", 150)]:
        cv2.imwrite(str(d / name), np.full((30, 40, 3), level, np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d
