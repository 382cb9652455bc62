"""``emotion-agent bench`` prints every figure the issue asks for, from real runs."""

from __future__ import annotations

import json
from pathlib import Path

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
