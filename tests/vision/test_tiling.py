"""Tiled detection: small far faces in a large frame are found; no face is counted twice."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.vision.observation import Detection
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig
from agent.vision.tiling import merge, tile_grid, to_frame

from .conftest import read


@pytest.mark.parametrize("n", [2, 3, 4])
def test_tiles_cover_the_frame_and_overlap(n: int) -> None:
    tiles = tile_grid(1920, 1080, n)
    assert len(tiles) == n * n
    xs = sorted({(x0, x1) for x0, _, x1, _ in tiles})
    assert xs[0][0] == 0
    assert xs[-1][1] == 1920
    for (_, a1), (b0, _) in itertools.pairwise(xs):
        assert b0 < a1, "neighbours overlap"
    assert tile_grid(1920, 1080, 1) == []


def test_a_tile_detection_maps_to_frame_coordinates() -> None:
    det = Detection(box=(0.5, 0.5, 0.1, 0.2), score=0.9, keypoints=((0.5, 0.5),) * 6)
    out = to_frame(det, (960, 540, 1920, 1080), 1920, 1080)
    assert out.box == pytest.approx((0.75, 0.75, 0.05, 0.1))
    assert out.keypoints[0] == pytest.approx((0.75, 0.75))
    assert out.score == 0.9


def test_merge_keeps_the_best_of_duplicates_and_cut_faces() -> None:
    kp = ((0.0, 0.0),) * 6
    whole = Detection(box=(0.1, 0.1, 0.2, 0.2), score=0.9, keypoints=kp)
    again = Detection(box=(0.11, 0.1, 0.2, 0.2), score=0.8, keypoints=kp)
    cut = Detection(box=(0.1, 0.1, 0.08, 0.2), score=0.7, keypoints=kp)  # left part, at a tile edge
    other = Detection(box=(0.6, 0.1, 0.2, 0.2), score=0.6, keypoints=kp)
    assert merge([cut, other, again, whole], max_faces=10) == [whole, other]
    assert merge([cut, other, again, whole], max_faces=1) == [whole]


@pytest.fixture(scope="module")
def far_group(media: Path) -> np.ndarray:
    """The six-person photo at half size in a 1920 x 1080 frame: faces about 54 px wide."""
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    small = cv2.resize(read(media, "group6.jpg"), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frame[100 : 100 + small.shape[0], 200 : 200 + small.shape[1]] = small
    return frame


def test_tiles_find_small_far_faces_the_whole_frame_misses(far_group: np.ndarray) -> None:
    whole = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    tiled = VisionPipeline.from_config(VisionConfig(accelerator="cpu", tiles=2))
    assert len(whole.detect(far_group)) <= 1
    found = tiled.detect(far_group)
    assert len(found) >= 5
    for d in found:  # each inside the pasted photo, in frame coordinates
        assert 200 / 1920 <= d.box[0] <= 840 / 1920
        assert 100 / 1080 <= d.box[1] <= 543 / 1080
    assert tiled.scratch_is_zero()


@pytest.mark.parametrize("name", ["chelsea.png", "motorcycle.png", "logo.png", "coffee.png"])
def test_tiles_add_no_detection_on_images_without_faces(media: Path, name: str) -> None:
    tiled = VisionPipeline.from_config(VisionConfig(accelerator="cpu", tiles=3))
    assert tiled.detect(read(media, name)) == []
