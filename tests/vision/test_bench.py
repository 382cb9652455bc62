"""``emotion-agent bench`` prints every figure the issue asks for, from real runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.cli import main


def run_bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_on_the_builtin_clip_reports_invokes_fps_ratio_lifetimes_and_rss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_bench(capsys, "--frames", "12", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["source"] == "built-in astronaut clip"
    assert r["frame_size"] == "640x360"
    assert r["faces_per_frame"] == 1.0  # one real face in every frame
    assert r["detector"] == "full_range"
    assert r["threads"] == 1
    assert r["detect_invoke_ms"] > r["emotion_invoke_ms"] > 0
    models_ms = r["detect_invoke_ms"] + r["emotion_invoke_ms"]
    assert r["model_bound_fps"] == pytest.approx(1000 / models_ms, rel=0.01)
    assert r["ratio"] == pytest.approx(r["pipeline_fps"] / r["model_bound_fps"], rel=0.01)
    assert 0 < r["lifetime_p50_ms"] <= r["lifetime_p99_ms"]
    # ru_maxrss is the process's peak: earlier tests in the same process may have set it
    assert 20 < r["rss_before_vision_mb"] <= r["peak_rss_mb"] < 2000
    assert 0 < r["anon_rss_mb"] < r["peak_rss_mb"]
    assert 0 < r["file_rss_mb"] < r["peak_rss_mb"]  # libpython and the libraries at least


def test_bench_text_output_names_each_figure(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_bench(capsys, "--frames", "3", "--detector", "short_range")
    assert code == 0
    for label in ("detect invoke", "emotion invoke", "model-bound fps", "pipeline fps", "ratio",
                  "frame lifetime", "peak RSS", "detector short_range"):
        assert label in out


def test_bench_reads_a_source_through_the_camera_layer(
    capsys: pytest.CaptureFixture[str], media: Path
) -> None:
    code, out, _ = run_bench(capsys, str(media / "group6.jpg"), "--frames", "2", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["frame_size"] == "1280x886"
    assert r["faces_per_frame"] == 6.0


def test_bench_refuses_a_source_that_cannot_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code, _, err = run_bench(capsys, str(bad), "--frames", "2")
    assert code == 2
    assert "broken.png" in err
    assert "Traceback" not in err


def test_bench_refuses_zero_frames(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_bench(capsys, "--frames", "0")
    assert code == 2
    assert "--frames must be at least 1 (found 0)" in err


CLIP_FIELDS = {
    "fps", "ms_per_frame", "detect_ms", "emotion_ms", "glue_ms", "detector_runs", "frames", "emotion_reads",
    "emotion_reused", "budget_dropped", "cpu_s_per_video_min", "peak_rss_mb", "video_seconds",
}


def check_clip_result(r: dict[str, Any], frames: int) -> None:
    assert set(r) >= CLIP_FIELDS
    assert r["frames"] == frames
    assert r["frame_size"] == "640x360"
    assert r["video_seconds"] == pytest.approx(frames / 5)  # the demo clip runs at 5 fps
    parts = r["detect_ms"] + r["emotion_ms"] + r["glue_ms"]
    assert r["ms_per_frame"] == pytest.approx(parts, abs=0.01)
    assert r["fps"] == pytest.approx(1000 / r["ms_per_frame"], rel=0.02)
    assert 0 < r["detector_runs"] <= frames
    assert r["budget_dropped"] == 0  # a few ms per frame against 200 ms of video per frame
    assert r["cpu_s_per_video_min"] > 0
    assert 20 < r["peak_rss_mb"] < 2000
    assert 0 < r["anon_rss_mb"] < r["peak_rss_mb"]


def test_bench_gating_runs_the_clip_through_the_services_stage(
    capsys: pytest.CaptureFixture[str], sample_clip: Path
) -> None:
    """35 frames: the empty lobby (0-4 s), then the astronaut walking in and across."""
    code, out, _ = run_bench(capsys, str(sample_clip), "--gating", "on", "--frames", "35", "--json")
    assert code == 0
    r = json.loads(out)
    check_clip_result(r, 35)
    assert r["gating"] == "on"
    assert r["precision"] == "float"
    assert r["detector_runs"] < 35  # the static empty lobby skips the detector
    assert r["faces"] > 0
    assert r["emotion_reads"] > 0
    assert r["detect_invoke_ms"] > r["emotion_invoke_ms"] > 0


def test_bench_compare_prints_float_int8_gated_ungated_side_by_side(
    capsys: pytest.CaptureFixture[str], sample_clip: Path
) -> None:
    """Each variant runs in a child process; 60 frames reach the group of six."""
    code, out, _ = run_bench(capsys, str(sample_clip), "--compare", "--frames", "60", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["precision"], r["gating"]) for r in rows] == [
        ("float", "off"), ("float", "on"), ("int8", "off"), ("int8", "on")
    ]
    for r in rows:
        check_clip_result(r, 60)
    for ungated, gated in (rows[0:2], rows[2:4]):
        assert ungated["detector_runs"] == 60
        assert gated["detector_runs"] < 60
        assert gated["faces"] == ungated["faces"]  # skipped frames are frames without anyone
        assert ungated["emotion_reused"] == 0

    code, out, _ = run_bench(capsys, str(sample_clip), "--compare", "--frames", "3", "--emotion-every", "5")
    assert code == 0
    for head in ("precision", "gate", "fps", "ms/frame", "detect", "emotion", "glue", "detector calls",
                 "emotion reads/reused", "CPU s/min video", "peak RSS MB", "anon MB",
                 "emotion_every_frames 5"):
        assert head in out
    assert len([line for line in out.splitlines() if line.lstrip().startswith(("float", "int8"))]) == 4


def test_bench_compare_without_the_demo_clip_says_how_to_make_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agent.commands import bench_clip  # noqa: PLC0415

    monkeypatch.setattr(bench_clip, "DEMO_CLIP", tmp_path / "samples" / "lobby.mp4")
    code, _, err = run_bench(capsys, "--compare")
    assert code == 2
    assert "lobby.mp4 is missing: run `make demo` or `python tools/make_sample.py`" in err


def test_bench_times_every_frame_of_a_clip_and_its_invoke_limit(
    capsys: pytest.CaptureFixture[str], sample_clip: Path
) -> None:
    """It used to cycle the first ~16 MB of decoded frames (24 of the demo clip's 100, all of
    them the empty lobby); now every frame is timed, one at a time, and the invoke limit counts
    one emotion invoke per face read in each frame."""
    code, out, _ = run_bench(capsys, str(sample_clip), "--json")
    assert code == 0
    r = json.loads(out)
    assert r["frames"] == 100
    assert r["whole_clip"] is True
    assert 1.5 < r["faces_per_frame"] < 2.5  # 40 empty frames, 30 of one person, 30 of six
    per_frame_ms = 1000 / r["invoke_limit_fps"]
    assert per_frame_ms > 0  # a mean over the clip; medians are printed beside it, not compared (load)
    assert r["limit_ratio"] == pytest.approx(r["pipeline_clip_fps"] / r["invoke_limit_fps"], rel=0.01)
    assert r["glue_ms"] == pytest.approx(1000 / r["pipeline_clip_fps"] - per_frame_ms, abs=0.01)
    assert 0 < r["limit_cpu_ratio"] <= 1.2
    # the decoding thread scaled every frame for the detector, as in `run`, and said what it cost
    assert r["lores_frames"] == 100
    assert r["source_scaling_ms"] > 0
    # timed on the second pass; the first one's ratio is reported beside it
    first = r["first_pass"]
    assert 0 < first["limit_ratio"] <= 1.2
    assert first["major_faults"] >= 0


def test_bench_text_says_how_many_frames_and_the_ratio_to_the_invoke_limit(
    capsys: pytest.CaptureFixture[str], sample_clip: Path
) -> None:
    code, out, _ = run_bench(capsys, str(sample_clip), "--frames", "7")
    assert code == 0
    assert "(640x360, 7 frames, " in out  # not the whole clip: said by the count alone
    assert "invoke limit" in out
    assert "of the invoke limit" in out
    assert "scaled by the source as it decoded, in 7 of 7 frames: " in out
    assert "the figures above are the second pass" in out
    assert "ms per frame outside the route" in out


def test_bench_matrix_runs_each_detector_and_precision_in_its_own_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_bench(capsys, "--matrix", "--frames", "3", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["detector"], r["precision"]) for r in rows] == [
        ("full_range", "float"), ("full_range", "int8"), ("short_range", "float"), ("short_range", "int8"),
    ]
    skipped = "no int8 variant in the manifest"
    assert rows[3] == {"detector": "short_range", "precision": "int8", "skipped": skipped}
    for r in rows[:3]:
        assert r["frames"] == 3
        assert r["invoke_limit_fps"] > 0
        assert r["limit_ratio"] > 0
        assert r["anon_rss_mb"] > 0
        assert r["file_rss_mb"] > 0


def test_bench_keeps_no_copy_of_the_first_frame_while_it_times_the_clip(
    capsys: pytest.CaptureFixture[str], sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame-sized pixel buffers (colour or grey) alive in the middle of the timed pass (numpy's
    allocations, seen by tracemalloc): the decoder's colour buffer (zeroed once the grey frame
    was made from it), the grey frame and the buffer the bench copies it into. A kept warm-up
    copy of the first frame was one more (6 MB of peak RSS at 1080p)."""
    from agent.route import FrameRoute  # noqa: PLC0415

    frame_bytes = 640 * 360 * 3
    alive: list[int] = []
    carry = FrameRoute.carry

    def counting_carry(route: FrameRoute, frame: Any) -> Any:
        if frame.index == 3:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.DomainFilter(inclusive=True, domain=np.lib.tracemalloc_domain)]
            )
            alive.append(sum(1 for t in snapshot.traces if t.size in (frame_bytes, frame_bytes // 3)))
        return carry(route, frame)

    monkeypatch.setattr(FrameRoute, "carry", counting_carry)
    tracemalloc.start()
    try:
        code, out, _ = run_bench(capsys, str(sample_clip), "--frames", "5", "--json")
    finally:
        tracemalloc.stop()
    assert code == 0
    assert json.loads(out)["frames"] == 5
    assert alive == [3, 3]  # in the first pass and in the timed one: nothing of the first is left


def test_bench_frame_lifetime_counts_the_copy_the_service_counts(
    capsys: pytest.CaptureFixture[str], media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's lifetime starts before the source scales the copy; so must the bench's.
    With the scaling made to take 40 ms, both record at least 40 ms per frame."""
    from agent.camera.base import SourceOptions, open_source  # noqa: PLC0415
    from agent.clock import SystemClock  # noqa: PLC0415
    from agent.privacy.lease import LifetimeRecorder  # noqa: PLC0415
    from agent.route import FrameRoute  # noqa: PLC0415
    from agent.vision.shrink import Shrinker  # noqa: PLC0415
    from agent.vision.stage import VisionStage  # noqa: PLC0415
    from tests.test_route import SeeingPipeline  # noqa: PLC0415

    original = Shrinker.shrink

    def slow(self: Shrinker, pixels: Any, rgb: Any) -> Any:
        time.sleep(0.04)
        return original(self, pixels, rgb)

    monkeypatch.setattr(Shrinker, "shrink", slow)
    image = str(media / "group6.jpg")
    recorder = LifetimeRecorder(SystemClock())
    src = open_source(image, SourceOptions(realtime=False, detector_side=192), SystemClock())
    try:
        frame = src.read()
        assert frame is not None
        assert frame.lores is not None
        FrameRoute(VisionStage.plain(SeeingPipeline()), recorder=recorder).carry(frame)  # type: ignore[arg-type]
    finally:
        src.close()
    assert recorder.drain().samples_ms[0] >= 40.0

    code, out, _ = run_bench(capsys, image, "--frames", "3", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["source_scaling_ms"] >= 40.0
    assert r["lifetime_p50_ms"] >= 40.0


def test_bench_forbids_core_dumps_before_it_reads_a_frame(tmp_path: Path, sample_clip: Path) -> None:
    """bench reads real cameras and clips as ``run`` and ``analyze`` do: a crash, or Ctrl-\\
    (SIGQUIT), in a shell that allows cores wrote those frames into a core file (found by
    review). Run in a child whose core limit is unlimited, it leaves the limit at 0 and the
    process not dumpable."""
    script = (
        "import ctypes, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "from agent.cli import main\n"
        f"code = main(['--log-level', 'WARNING', 'bench', {str(sample_clip)!r}, '--frames', '2', '--json'])\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(code, resource.getrlimit(resource.RLIMIT_CORE), libc.prctl(3, 0, 0, 0, 0), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path)
    assert done.stderr.strip().splitlines()[-1] == "0 (0, 0) 0", done.stderr
