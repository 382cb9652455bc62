"""Tiles on stills, blurred faces cut by the frame edge, one reading per face, tiny frames:
each test failed before its fix (2026-12-06 review)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.frame import Pixels
from agent.vision.observation import Detection, Quality
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig, VisionConfig
from agent.vision.stage import VisionStage
from agent.vision.tiling import tile_grid

from .conftest import read


def test_a_still_is_searched_by_tiles_when_the_whole_frame_finds_nothing(media: Path) -> None:
    """vision.tiles on `analyze IMAGE` (stills): the padded retry must not replace the tiles."""
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    small = cv2.resize(read(media, "group6.jpg"), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frame[100 : 100 + small.shape[0], 200 : 200 + small.shape[1]] = small
    tiled = VisionPipeline.from_config(VisionConfig(accelerator="cpu", tiles=2))
    as_video = tiled.detect(frame)
    assert len(as_video) >= 5
    as_still = tiled.detect(frame, still=True)
    assert len(as_still) >= len(as_video), (len(as_still), len(as_video))


def test_a_blurred_face_touching_the_frame_edge_still_abstains_as_blurred(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """The warp's black border outside the frame is a hard edge that the sharpness index reads
    as face detail: a face the gate refuses as blurred in mid-frame passes at the frame edge."""
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 6)
    (centre,) = pipeline.analyze(blurred)
    assert centre.quality.abstain_reason == "blurred"
    at_edge = np.ascontiguousarray(blurred[:, 195:])  # the same face, its left side cut by the edge
    (face,) = pipeline.analyze(at_edge)
    assert face.box[0] == 0.0
    assert face.quality.face_px >= pipeline.limits.min_face_px
    assert face.quality.abstain_reason == "blurred", face.quality


def test_three_tiles_on_a_two_pixel_high_frame_do_not_raise() -> None:
    """check_pixels admits a 2-pixel side; tile_grid then makes an empty tile and cv2 raises."""
    tiled = VisionPipeline.from_config(VisionConfig(accelerator="cpu", tiles=3))
    assert tiled.analyze(np.zeros((2, 300, 3), np.uint8)) == []
    assert tiled.scratch_is_zero()
    assert all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in tile_grid(300, 2, 3))


def _scripted(
    monkeypatch: pytest.MonkeyPatch, frames: list[list[Detection]]
) -> tuple[VisionPipeline, list[int]]:
    """A real pipeline whose detector answers ``frames`` in turn, every face passing the gate,
    and whose classifier gives each read a new label (so a reused reading is recognisable)."""
    p = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    script = iter(frames)
    good = Quality(face_px=100.0, sharpness=2.0, brightness=120.0, yaw_degrees=0.0)
    labels = iter(["happy", "sad", "angry", "fear", "surprise", "neutral"])
    reads: list[int] = []

    def detect(pixels: Pixels, still: bool = False, lores: Pixels | None = None) -> list[Detection]:
        return next(script)

    def measure(pixels: Pixels, det: Detection, i: int) -> tuple[Detection, tuple[Quality, float]]:
        p._crop(i)
        return det, (good, 120.0)

    def classify(grey: np.ndarray) -> tuple[tuple[str, float], ...]:
        reads.append(1)
        return ((next(labels), 1.0),)

    monkeypatch.setattr(p, "_detect", detect)
    monkeypatch.setattr(p, "_measure", measure)
    monkeypatch.setattr(p.classifier, "classify", classify)
    return p, reads


KP = ((0.0, 0.0),) * 6


def test_one_earlier_reading_is_not_handed_to_two_faces_of_the_next_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """emotion_min_iou 0.5 (legal): one person, then two side by side (IoU 0.25 with each
    other, so the detector's NMS keeps both): each overlaps the old box by 0.54 and both get
    the first person's emotion; at most one of them can be that person."""
    one = Detection(box=(0.35, 0.3, 0.3, 0.3), score=0.9, keypoints=KP)
    left = Detection(box=(0.26, 0.3, 0.3, 0.3), score=0.9, keypoints=KP)
    right = Detection(box=(0.44, 0.3, 0.3, 0.3), score=0.8, keypoints=KP)
    p, _ = _scripted(monkeypatch, [[one], [left, right]])
    stage = VisionStage(p, GatingConfig(enabled=False, emotion_every_frames=5, emotion_min_iou=0.5))
    frame = np.full((100, 100, 3), 128, np.uint8)
    (first,) = stage.analyze(frame, 0, 0.0)
    assert first.emotion == "happy"
    two = stage.analyze(frame, 1, 0.2)
    assert [f.emotion for f in two] != ["happy", "happy"]


def test_a_reading_made_in_this_frame_is_not_given_to_another_face_of_the_same_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """emotion_min_iou 0.25 (legal, gt=0): two faces of one frame are two people, yet the
    second gets the first one's reading, made a moment before in the same frame."""
    left = Detection(box=(0.26, 0.3, 0.3, 0.3), score=0.9, keypoints=KP)
    right = Detection(box=(0.44, 0.3, 0.3, 0.3), score=0.8, keypoints=KP)
    p, reads = _scripted(monkeypatch, [[left, right]])
    stage = VisionStage(p, GatingConfig(enabled=False, emotion_every_frames=5, emotion_min_iou=0.25))
    faces = stage.analyze(np.full((100, 100, 3), 128, np.uint8), 0, 0.0)
    assert len(reads) == 2, [f.emotion for f in faces]
