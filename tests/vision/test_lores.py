"""A frame the camera already scaled (``Frame.lores``, picamera2's lores stream) goes to the
detector as it is, and only when it has exactly the letterbox's size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agent.vision.pipeline import VisionPipeline
from tests.vision.conftest import read


def scaled_rgb(pipeline: VisionPipeline, image: np.ndarray) -> np.ndarray:
    """``image`` scaled as a camera's scaler would (an area filter), RGB, at the letterbox size."""
    p = pipeline.detector.placement(image.shape[1], image.shape[0])
    small = cv2.resize(image, (p.w, p.h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def test_the_detector_reads_the_cameras_scaled_copy_instead_of_resizing(
    pipeline: VisionPipeline, media: Path
) -> None:
    group = read(media, "group6.jpg")
    lores = scaled_rgb(pipeline, group)
    blank = np.zeros_like(group)
    faces = pipeline.analyze(blank, lores=lores)  # faces only in the lores copy: it was read
    assert len(faces) == 6
    assert pipeline.scratch_is_zero()


def test_an_area_scaled_copy_finds_the_faces_the_resize_chain_finds(
    pipeline: VisionPipeline, media: Path
) -> None:
    group = read(media, "group6.jpg")
    chain = pipeline.detect(group)
    camera = pipeline.analyze(group.copy(), lores=scaled_rgb(pipeline, group))
    assert len(camera) == len(chain) == 6
    by_x = sorted(camera, key=lambda f: f.box[0])
    for a, b in zip(sorted(chain, key=lambda d: d.box[0]), by_x, strict=True):
        assert np.allclose(a.box, b.box, atol=0.02)


def test_a_copy_of_another_size_is_ignored(pipeline: VisionPipeline, media: Path) -> None:
    group = read(media, "group6.jpg")
    wrong = np.zeros((50, 80, 3), np.uint8)  # not the letterbox size: the frame is resized as usual
    assert len(pipeline.analyze(group, lores=wrong)) == 6


def test_a_portrait_copy_is_placed_in_the_zeroed_canvas(pipeline: VisionPipeline, media: Path) -> None:
    """A portrait frame fills columns, not rows, of the square input: the copy goes through the
    canvas, which holds pixels only until the input is filled."""
    portrait = np.ascontiguousarray(read(media, "astronaut.png")[:, 64:448])  # 384 wide, 512 high
    p = pipeline.detector.placement(portrait.shape[1], portrait.shape[0])
    assert p.w < p.size  # the canvas path
    faces = pipeline.analyze(np.zeros_like(portrait), lores=scaled_rgb(pipeline, portrait))
    assert len(faces) == 1
    assert pipeline.scratch_is_zero()
