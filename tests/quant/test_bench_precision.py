"""``emotion-agent bench --precision`` times the chosen variant (float vs int8 side by side)."""

from __future__ import annotations

import json

import pytest

from agent.cli import main


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", "--frames", "4", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_runs_the_int8_models_and_reports_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = bench(capsys, "--precision", "int8", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["faces_per_frame"] == 1.0  # the astronaut, found by the int8 detector
    assert result["detect_invoke_ms"] > 0
    assert result["emotion_invoke_ms"] > 0


def test_bench_int8_with_a_detector_that_has_no_int8_variant_exits_2_with_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = bench(capsys, "--precision", "int8", "--detector", "short_range")
    assert code == 2
    assert "'face_detection_short_range' has no int8 variant" in err
    assert "set vision.precision to float" in err
    assert "Traceback" not in err
