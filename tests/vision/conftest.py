"""Real models on real media: one pipeline per test session (loading takes ~20 ms)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.frame import Pixels
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig

NON_FACES = ("chelsea.png", "coffee.png", "rocket.jpg", "text.png", "logo.png", "page.png",
             "horse.png", "motorcycle.png")
"""Pinned images without a human face (a cat, objects, text, a horse, a motorbike).
``camera.png`` is not among them: scikit-image's cameraman shows a real face."""

ASTRONAUT_FACE = (175, 70, 280, 175)
"""x0, y0, x1, y1 of Eileen Collins' face in scikit-image's 512 x 512 astronaut (by eye)."""


def read(media: Path, name: str) -> Pixels:
    pixels = cv2.imread(str(media / name), cv2.IMREAD_COLOR)
    assert pixels is not None, name
    return np.ascontiguousarray(pixels)


@pytest.fixture(scope="session")
def pipeline() -> Iterator[VisionPipeline]:
    p = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    yield p
    p.close()


@pytest.fixture(scope="session")
def astronaut(media: Path) -> Pixels:
    return read(media, "astronaut.png")
