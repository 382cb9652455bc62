"""The service on file sources (issues 14 item 8 and 18): loops move on, folders are read once per
pass, files that cannot be used stop it (exit 2) instead of being retried forever."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions, open_source
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.errors import SourceError
from agent.service import Service
from tests.test_service import NO_GATE, messages, verify_all, write_config

START = 1_800_000_000.0  # a multiple of 10 s: the clip's time 0 opens a window


class StopAfter:
    """Stands in for the models: counts frames; asks the service to stop after ``limit``."""

    labels = ("happy", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self, limit: int | None = None) -> None:
        self.frames = 0
        self.limit = limit
        self.service: Service | None = None

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[Any]:
        self.frames += 1
        if self.limit is not None and self.frames >= self.limit and self.service is not None:
            self.service.signals.stop.set()
        return []

    def close(self) -> None:
        pass


def grey_clip(path: Path, frames: int, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (64, 48))
    rng = np.random.default_rng(3)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def service_for(
    tmp: Path, source: str, camera: str, pipeline: StopAfter, opener: Any = open_source
) -> Service:
    path = write_config(tmp, source, extra=NO_GATE)
    path.write_text(path.read_text().replace("loop: false, realtime: false", camera))
    service = Service(
        load_config(path), clock=FakeClock(start=START), opener=opener,
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    pipeline.service = service
    return service


@pytest.mark.parametrize("realtime", ["true", "false"])
def test_a_looping_file_keeps_windows_advancing_across_passes(tmp_path: Path, realtime: str) -> None:
    """A 2 s clip looped for 35 s of video at 5 fps: windows at 0, 10, 20 (and the flushed 30).
    Before, the position restarted at 0: the fps limiter refused every later frame (with
    realtime false the reader spun at full CPU and never returned)."""
    clip = grey_clip(tmp_path / "clip.mp4", frames=20)
    pipeline = StopAfter(limit=175)
    service = service_for(tmp_path, str(clip), f"loop: true, realtime: {realtime}", pipeline)
    assert service.run() == 0
    assert pipeline.frames == 175
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    starts = [s["window_start"] - START for s in stats]
    assert verify_all(tmp_path) == []
    if realtime == "false":
        assert starts == [0, 10, 20, 30]
        # no faces: every window is suppressed and its frame figures are in the audit log only
        assert [f["analysed"] for f in audit_frames(tmp_path)[:3]] == [50, 50, 50]
    else:  # paced on a FakeClock that the loop's idle waits also move: the grabber drops frames
        assert len(starts) >= 4
        assert starts == sorted(set(starts))
        assert starts[-1] >= 30  # far past the clip's 2 s


def test_a_folder_with_broken_files_takes_each_good_image_once(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(folder / name), np.full((48, 64, 3), 90, np.uint8))
    for name in ("b.png", "d.jpg"):
        (folder / name).write_bytes(b"not an image")
    pipeline = StopAfter()
    service = service_for(tmp_path, str(folder), "loop: false, realtime: false", pipeline)
    assert service.run() == 0
    assert pipeline.frames == 2
    (stats,) = [m["body"] for m in messages(tmp_path, "stats")]
    assert stats["frames"] is None  # suppressed (no faces): the audit log keeps the figures
    assert [f["analysed"] for f in audit_frames(tmp_path)] == [2]
    audit = (tmp_path / "state" / "audit").glob("segment-*.jsonl")
    errors = [json.loads(line)["data"] for p in audit for line in p.read_text().splitlines()]
    incomplete = [e["message"] for e in errors if e.get("code") == "source_incomplete"]
    assert incomplete == [f"{folder}: 2 frame(s) could not be decoded (damaged file)"]


def audit_frames(tmp: Path) -> list[dict[str, Any]]:
    """The ``frames`` entries of the local audit log, one per window."""
    entries = [
        json.loads(line)
        for p in sorted((tmp / "state" / "audit").glob("segment-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    return [e["data"] for e in entries if e["kind"] == "frames"]


def _text_mp4(tmp: Path) -> str:
    (tmp / "notes.mp4").write_text("just text\n")
    return str(tmp / "notes.mp4")


def _zero_mp4(tmp: Path) -> str:
    (tmp / "zero.mp4").write_bytes(b"")
    return str(tmp / "zero.mp4")


def _empty_folder(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


def _random_mp4(tmp: Path) -> str:
    (tmp / "random.mp4").write_bytes(np.random.default_rng(5).integers(0, 256, 50_000, np.uint8).tobytes())
    return str(tmp / "random.mp4")


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda t: str(t / "missing.mp4"), "missing.mp4: no such file or folder"),
        (_text_mp4, "notes.mp4: cannot decode the video"),
        (_zero_mp4, "zero.mp4: cannot decode the video: empty file (0 bytes)"),
        (_random_mp4, "random.mp4: cannot decode the video"),
        (_empty_folder, "in it (the folder is empty)"),
        (lambda t: "file:///etc/passwd", "/etc/passwd: cannot decode the video"),
    ],
)
def test_a_file_source_that_cannot_be_used_stops_the_service_at_once(
    tmp_path: Path, make: Any, named: str
) -> None:
    """Before, the feed retried it forever with a growing backoff."""
    opened: list[str] = []

    def opener(source: str, options: SourceOptions, clock: Clock) -> Any:
        opened.append(source)
        return open_source(source, options, clock)

    service = service_for(tmp_path, make(tmp_path), "loop: true, realtime: true", StopAfter(), opener)
    with pytest.raises(SourceError, match=re.escape(named)):
        service.run()
    assert len(opened) == 1


@pytest.mark.slow
def test_run_on_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, str(tmp_path / "gone.mp4"))
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(path)], capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    said = f"emotion-agent: error: camera.source {tmp_path / 'gone.mp4'}: no such file or folder"
    assert said in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_analyze_on_a_video_damaged_in_the_middle_prints_the_summary_and_exits_2(tmp_path: Path) -> None:
    data = grey_clip(tmp_path / "full.mp4", frames=100).read_bytes()
    cut = len(data) // 2
    (tmp_path / "mid.mp4").write_bytes(data[: cut - 2000] + bytes(4000) + data[cut + 2000 :])
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "analyze", "--json", str(tmp_path / "mid.mp4")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    frames = summary["frames"]
    assert 0 < frames < 100
    assert f"mid.mp4: {100 - frames} frame(s) could not be decoded" in proc.stderr
    assert f"ended after {frames} of its 100 frames" in proc.stderr  # the warning
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("detector", "side"), [("full_range", 192), ("short_range", 128)])
def test_the_camera_is_asked_for_the_detectors_input_side(tmp_path: Path, detector: str, side: int) -> None:
    """So picamera2 can scale a lores copy to the detector's letterbox size in its ISP."""
    clip = grey_clip(tmp_path / "clip.mp4", frames=3)
    asked: list[SourceOptions] = []

    def opener(source: str, options: SourceOptions, clock: Clock) -> Any:
        asked.append(options)
        return open_source(source, options, clock)

    vision = f"vision: {{gating: {{enabled: false}}, detector: {detector}}}\n"
    path = write_config(tmp_path, str(clip), extra=vision)
    service = Service(
        load_config(path), clock=FakeClock(start=START), opener=opener,
        pipeline_factory=lambda _c: StopAfter(),  # type: ignore[arg-type,return-value]
    )
    assert service.run() == 0
    assert [o.detector_side for o in asked] == [side]
