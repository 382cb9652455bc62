"""tools/make_sample.py builds the demo clip deterministically, with the timeline it documents."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "tools" / "make_sample.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_sample"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool()


def read_frames(path: Path) -> tuple[float, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return fps, frames


@pytest.fixture(scope="module")
def clip(tool: ModuleType, media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "lobby.mp4"
    assert tool.main(["--out", str(out), "--seconds", "4", "--media", str(media)]) == 0
    return out


def test_the_clip_has_the_documented_size_rate_length_and_timeline(clip: Path) -> None:
    fps, frames = read_frames(clip)
    assert fps == 5.0
    assert len(frames) == 20
    assert frames[0].shape == (360, 640, 3)
    meta = json.loads(clip.with_suffix(".timeline.json").read_text())
    assert [(s["start"], s["end"], s["people"]) for s in meta["segments"]] == [
        (0.0, 0.8, 0), (0.8, 1.0, None), (1.0, 2.0, 1), (2.0, 3.2, 6), (3.2, 4.0, 0),
    ]
    assert meta["people_per_frame"] == [0] * 4 + [None] + [1] * 5 + [6] * 6 + [0] * 4
    # the empty lobby is the same picture at both ends (up to noise and compression)
    assert np.abs(frames[1].astype(int) - frames[18].astype(int)).mean() < 3
    # the astronaut covers a tenth or more of the middle frames; the group fills the whole view
    assert changed_share(frames[7], frames[1]) > 0.10
    assert changed_share(frames[12], frames[1]) > 0.80


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 30).mean())


def test_a_second_build_is_byte_identical(tool: ModuleType, clip: Path, tmp_path: Path, media: Path) -> None:
    again = tmp_path / "again.mp4"
    tool.build_sample(again, 4.0, media)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(clip.read_bytes()).digest()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["again.mp4", "again.timeline.json"]  # no partial file left behind


def test_missing_media_is_explained(tool: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"\.(png|jpg) is missing: run `make media` \(tools/fetch_media"):
        tool.build_sample(tmp_path / "x.mp4", 4.0, tmp_path)


def test_size_scales_every_frame_of_the_same_scene(tmp_path: Path, media: Path) -> None:
    """--size 1280x720 (the 1080p bench clip is made the same way): same frame count, the
    requested size, and each frame is the 640x360 frame scaled (small codec differences only)."""
    small, big = tmp_path / "s.mp4", tmp_path / "b.mp4"
    for out, size in ((small, "640x360"), (big, "1280x720")):
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_sample.py"), "--out", str(out),
             "--media", str(media), "--seconds", "4", "--size", size],
            check=True, capture_output=True,
        )
    a, b = cv2.VideoCapture(str(small)), cv2.VideoCapture(str(big))
    n = 0
    while True:
        ok_a, fa = a.read()
        ok_b, fb = b.read()
        assert ok_a == ok_b
        if not ok_a:
            break
        assert fb.shape == (720, 1280, 3)
        down = cv2.resize(fb, (640, 360), interpolation=cv2.INTER_AREA)
        assert float(np.abs(down.astype(int) - fa.astype(int)).mean()) < 6
        n += 1
    assert n == 20
