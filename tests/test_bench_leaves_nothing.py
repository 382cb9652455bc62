"""``bench`` on hostile runs: no pixels left in its own copies when a camera fails part-way or
the frame size changes; a camera timed with ``--gating`` stops at the default frame count; the
precision reported is the one that ran (found by review)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceInfo
from agent.cli import main
from agent.commands import bench, bench_clip
from agent.errors import CameraLost
from agent.frame import Frame

MEDIA = Path(__file__).resolve().parents[1] / ".cache" / "media"


class FailingCamera:
    """A live camera that delivers ``good`` frames of a face, then is unplugged."""

    def __init__(self, image: np.ndarray, good: int) -> None:
        self.image = image
        self.left = good
        self.i = 0

    @property
    def info(self) -> SourceInfo:
        h, w = self.image.shape[:2]
        return SourceInfo("opencv", "/dev/video0", 30.0, w, h, live=True)

    def read(self) -> Frame | None:
        if self.left == 0:
            raise CameraLost("/dev/video0: the camera stopped delivering frames")
        self.left -= 1
        self.i += 1
        return Frame(self.image.copy(), self.i - 1, time.monotonic(), time.time())

    def close(self) -> None:
        pass


def test_bench_zeroes_its_frame_copy_when_the_camera_fails_mid_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    image = cv2.imread(str(MEDIA / "astronaut.png"), cv2.IMREAD_COLOR)
    assert image is not None
    made: list[Any] = []
    original = bench._Buffers

    def recording_buffers(*a: Any, **k: Any) -> Any:
        b = original(*a, **k)
        made.append(b)
        return b

    monkeypatch.setattr(bench, "_Buffers", recording_buffers)
    monkeypatch.setattr(bench, "open_source", lambda *a, **k: FailingCamera(image, good=3))

    code = main(["bench", "/dev/video0", "--frames", "10", "--json"])
    err = capsys.readouterr().err
    assert code == 1  # CameraLost: a clear error, no traceback
    assert "stopped delivering frames" in err
    assert "Traceback" not in err
    assert made, "measure() made no buffers"
    left = [b for b in made if np.any(b.pixels) or np.any(b.lores)]
    assert not left, (
        f"{len(left)} bench buffer(s) still hold frame pixels after bench ended "
        f"({int(np.count_nonzero(left[0].pixels))} non-zero bytes)"
    )


def test_bench_zeroes_its_frame_copy_when_the_frame_size_changes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A folder of two stills of different sizes: ``_Buffers.fill`` swaps in a new buffer of
    the new size and drops the old one, which still holds the previous frame (copied back in
    for ``prime_models`` after the route zeroed it), without zeroing it."""
    folder = tmp_path / "stills"
    folder.mkdir()
    shutil.copy(MEDIA / "astronaut.png", folder / "a.png")  # 512 x 512
    shutil.copy(MEDIA / "group6.jpg", folder / "b.jpg")  # 1280 x 886
    every: list[np.ndarray] = []

    class Recording(bench._Buffers):  # type: ignore[misc, name-defined]
        def __setattr__(self, name: str, value: Any) -> None:
            if name in ("pixels", "lores"):
                every.append(value)
            super().__setattr__(name, value)

    monkeypatch.setattr(bench, "_Buffers", Recording)
    code = main(["bench", str(folder), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    frame_buffers = [b for b in every if b.size > 0]
    assert len(frame_buffers) >= 2  # one per size, per pass
    dirty = [b.shape for b in frame_buffers if np.any(b)]
    assert not dirty, f"bench dropped frame buffers still holding pixels: {dirty}"


def test_bench_auto_reports_the_precision_that_ran_not_auto(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plain ``bench`` reports what ``auto`` chose (as ``--gating`` does), not the word
    ``auto``, so its figures can be told apart."""
    code = main(["bench", "--precision", "auto", "--frames", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    r = json.loads(out)
    assert r["precision"] in {"float", "int8", "float/int8", "int8/float"}, r["precision"]


class EndlessCamera(FailingCamera):
    """A live camera that never ends (as a real one); unplugged after ``good`` frames only so
    that a test of a bench that does not stop cannot hang."""


def test_bench_gating_on_a_camera_stops_after_the_default_frames(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--frames`` help: "default: every frame of a file; built-in clip or camera 300". Plain
    ``bench`` stops a camera at 300, and so does ``--gating`` (it read one until it failed)."""
    black = np.zeros((120, 160, 3), np.uint8)
    cam = EndlessCamera(black, good=bench.DEFAULT_FRAMES + 50)
    monkeypatch.setattr(bench_clip, "open_source", lambda *a, **k: cam)
    code = main(["bench", "/dev/video0", "--gating", "off", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, f"read {cam.i} frames, then: {err.strip().splitlines()[-1:]}"
    assert json.loads(out)["frames"] == bench.DEFAULT_FRAMES


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        (["--threads", "0"], "bench: vision.threads (--threads): Input should be greater than or equal to 1 "
         "(found 0). CPU threads for inference: "),
        (["--emotion-every", "0"], "bench: vision.gating.emotion_every_frames (--emotion-every): "),
    ],
)
def test_a_bad_override_says_what_was_found_and_what_the_setting_is(
    flag: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench --threads 0`` said only ``Input should be greater than or equal to 1``: unlike every
    config error, no value found, no flag and no help (found by a new user's trial)."""
    from agent.cli import main  # noqa: PLC0415

    assert main(["bench", *flag]) == 2
    err = capsys.readouterr().err
    assert said in err, err
