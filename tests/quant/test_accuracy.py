"""The accuracy report on real images: int8 must stay within the goal, or be marked as missing it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent.vision.manifest import default_models_dir
from agent.vision.observation import Detection

ROOT = Path(__file__).resolve().parents[2]
MODELS = default_models_dir()


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accuracy_report", ROOT / "tools" / "accuracy_report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool()


@pytest.fixture(scope="module")
def result(media: Path) -> dict[str, Any]:
    """The tool run as a user runs it (its own process), with its JSON output."""
    cmd = [sys.executable, str(ROOT / "tools" / "accuracy_report.py"), "--json", "--media", str(media)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def det(x: float, y: float, w: float, h: float) -> Detection:
    return Detection(box=(x, y, w, h), score=0.9, keypoints=((0.0, 0.0),) * 6)


def test_matching_counts_missed_and_extra_faces_at_iou_half(tool: ModuleType) -> None:
    ref = [det(0.1, 0.1, 0.2, 0.2), det(0.6, 0.6, 0.2, 0.2)]
    other = [det(0.11, 0.1, 0.2, 0.2), det(0.0, 0.8, 0.1, 0.1), det(0.7, 0.7, 0.2, 0.2)]
    # (0.7, 0.7) overlaps (0.6, 0.6) by IoU 0.01 / 0.07 = 0.14: not a match
    assert tool.match(ref, other) == (1, 1, 2)
    assert tool.match([], other) == (0, 0, 3)


def test_report_covers_astronaut_group_composites_and_every_clip_frame(
    tool: ModuleType, media: Path
) -> None:
    names = [n for n, _ in tool.images(media)]
    assert names[:2] == ["astronaut", "group6"]
    assert sum(n.startswith("composite-") for n in names) == 6
    assert sum(n.startswith("clip-") for n in names) == 100


def test_emotion_int8_drifts_at_most_one_point_of_top1_on_real_faces(result: dict[str, Any]) -> None:
    e = result["emotion"]
    assert e["faces"] >= 100  # astronaut, group, composites and the clip's faces
    assert e["top1_drift_points"] <= 1.0, e
    assert e["mean_abs_prob_diff"] <= 0.02, e
    assert e["meets_goal"] is True


def test_detector_int8_stays_within_its_recorded_drift(result: dict[str, Any]) -> None:
    """The full-range int8 detector misses the goal by two faces at the threshold (float scores
    0.520 and 0.511; docs/quantization.md); this fails if it drifts further than the manifest
    records (2 missed, 2 extra of 226; before the RELUs were fused: 1 missed, 5 extra), and if
    its figures move at all without the manifest being re-recorded (``accuracy_report.py
    --write``), so a better file cannot land while the manifest still says it misses."""
    (d,) = result["detectors"]
    assert d["model"] == "face_detection_full_range"
    assert d["float_faces"] >= 200
    assert d["missed"] <= 2, d
    assert d["extra"] <= 2, d
    assert d["meets_goal"] == (d["missed"] == 0)
    recorded = json.loads((MODELS / "manifest.json").read_text())["models"][d["model"]]["variants"]["int8"]
    figures = ("float_faces", "int8_faces", "matched", "missed", "extra")
    assert {k: recorded["accuracy"][k] for k in figures} == {k: d[k] for k in figures}


def test_manifest_verdicts_are_what_the_report_measures_now(result: dict[str, Any]) -> None:
    """``auto`` trusts ``variants.int8.accuracy.meets_goal``: it must be the measured verdict."""
    models = json.loads((MODELS / "manifest.json").read_text())["models"]
    for r in [*result["detectors"], result["emotion"]]:
        recorded = models[r["model"]]["variants"]["int8"]["accuracy"]
        assert recorded["meets_goal"] == r["meets_goal"], r["model"]
        assert recorded["images"] == result["images"]


def test_text_report_states_figures_and_verdicts(tool: ModuleType, result: dict[str, Any]) -> None:
    text = tool.render_text(result)
    assert "int8 vs float on 108 real images" in text
    assert "face_detection_full_range: float" in text
    assert "MISSES the goal" in text
    assert "emotion: " in text
    assert "top-1 agreement" in text
    assert "meets the goal" in text
