"""File sources that cannot be used, or are damaged part way (issue 18): named, counted, never retried."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions, open_source
from agent.clock import FakeClock
from agent.errors import SourceError
from tests.asuser import as_nobody


def noisy_video(path: Path, frames: int = 100) -> Path:
    """Random frames: every frame is a keyframe-sized chunk, so damage in the middle hits frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_a_fifo_named_like_a_video_is_refused_not_waited_on(tmp_path: Path, clock: FakeClock) -> None:
    os.mkfifo(tmp_path / "cam.mp4")
    with pytest.raises(SourceError, match=r"cam\.mp4: not a video file: it is a FIFO"):
        open_source(str(tmp_path / "cam.mp4"), SourceOptions(), clock)


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(tmp_path: Path, clock: FakeClock) -> None:
    os.mkfifo(tmp_path / "cam.jpg")
    with pytest.raises(SourceError, match=r"cam\.jpg: the image must be a regular file, not a FIFO"):
        open_source(str(tmp_path / "cam.jpg"), SourceOptions(), clock)


def test_a_text_file_url_is_refused_naming_it(clock: FakeClock) -> None:
    with pytest.raises(SourceError, match=r"^/etc/passwd: cannot decode the video"):
        open_source("file:///etc/passwd", SourceOptions(), clock)


def test_a_truncated_video_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    data = noisy_video(tmp_path / "full.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"half\.mp4: cannot decode the video"):
        open_source(str(tmp_path / "half.mp4"), SourceOptions(), clock)


def test_an_unreadable_video_says_so(tmp_path: Path, clock: FakeClock) -> None:
    clip = noisy_video(tmp_path / "clip.mp4", frames=3)
    clip.chmod(0o000)
    with as_nobody(), pytest.raises(SourceError, match=r"clip\.mp4: cannot read the file: Permission denied"):
        open_source(str(clip), SourceOptions(), clock)


def test_a_zero_byte_image_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SourceError, match=r"a\.png: empty file \(0 bytes\)"):
        open_source(str(tmp_path / "a.png"), SourceOptions(), clock)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 5000), (5000, 2)])
def test_an_image_too_small_to_analyse_is_refused_naming_it(
    tmp_path: Path, clock: FakeClock, width: int, height: int
) -> None:
    path = tmp_path / "thin.png"
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    with pytest.raises(SourceError, match=rf"thin\.png: {width} x {height} pixels is too small to analyse"):
        open_source(str(path), SourceOptions(), clock)


def test_a_folder_of_only_broken_images_is_refused_at_open(tmp_path: Path, clock: FakeClock) -> None:
    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"none of its 2 images can be used; the first: .*a\.jpg"):
        open_source(str(tmp_path), SourceOptions(), clock)


def test_a_looping_folder_whose_images_all_break_ends_instead_of_spinning(
    tmp_path: Path, clock: FakeClock
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((30, 40, 3), 60, np.uint8))
    src = open_source(str(tmp_path), SourceOptions(realtime=False, loop=True), clock)
    assert src.read() is not None
    (tmp_path / "a.png").write_bytes(b"broken now")
    assert src.read() is None  # a pass that gives no frame ends the loop
    assert src.info.lost == 1


def test_a_video_damaged_in_the_middle_reports_the_frames_lost(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    data = noisy_video(tmp_path / "full.mp4").read_bytes()
    cut = len(data) // 2
    (tmp_path / "mid.mp4").write_bytes(data[: cut - 2000] + bytes(4000) + data[cut + 2000 :])
    src = open_source(str(tmp_path / "mid.mp4"), SourceOptions(realtime=False), clock)
    frames = 0
    while src.read() is not None:
        frames += 1
    assert 0 < frames < 100
    assert src.info.lost == 100 - frames
    assert f"ended after {frames} of its 100 frames: {100 - frames} frames lost" in caplog.text


def test_an_intact_video_loses_nothing(tmp_path: Path, clock: FakeClock) -> None:
    src = open_source(str(noisy_video(tmp_path / "ok.mp4", frames=20)), SourceOptions(realtime=False), clock)
    frames = 0
    while src.read() is not None:
        frames += 1
    assert (frames, src.info.lost) == (20, 0)
