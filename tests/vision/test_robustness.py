"""A small subset of tools/robustness_report.py: each gate change kept goes the way the full
report says, and no clean face loses its label."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "robustness_report", ROOT / "tools" / "robustness_report.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["robustness_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool()


@pytest.fixture(scope="module")
def rows(tool: ModuleType, media: Path) -> dict[tuple[str, float, str], object]:
    conditions = {"brightness": (0.1, 0.2), "motion_blur_px": (31,), "noise": (60,)}
    out = tool.run(["float"], conditions, media, variants=("before", "after"))
    return {(r.condition, r.level, r.precision.split()[-1]): r for r in out}


def test_faces_come_from_more_than_one_package_with_labels_read_by_eye(tool: ModuleType) -> None:
    faces = tool.load_faces()
    assert len({f.package.split()[0] for f in faces}) >= 2
    labels = json.loads((ROOT / "tools" / "robustness_faces.json").read_text())["faces"]
    assert all(
        f["label"] in {"happy", "neutral", "sad", "angry", "surprise", "fear", "disgust"} for f in labels
    )


def test_no_clean_face_loses_its_label(rows: dict[tuple[str, float, str], object]) -> None:
    before, after = rows[("clean", 0, "before")], rows[("clean", 0, "after")]
    assert after.correct >= before.correct  # type: ignore[attr-defined]
    assert after.read >= before.read  # type: ignore[attr-defined]
    assert after.correct == after.read  # type: ignore[attr-defined]


def test_dim_faces_are_read_and_mostly_right_instead_of_abstaining(
    rows: dict[tuple[str, float, str], object],
) -> None:
    """Crop normalisation + min_brightness 10: light x0.1 and x0.2 faces are read."""
    for level in (0.1, 0.2):
        before, after = rows[("brightness", level, "before")], rows[("brightness", level, "after")]
        assert before.read == 0  # type: ignore[attr-defined]
        assert after.correct > before.correct  # type: ignore[attr-defined]
        assert after.correct * 2 > after.read  # type: ignore[attr-defined]


def test_the_blur_check_fires_on_motion_blur_and_its_abstentions_are_mostly_right(
    rows: dict[tuple[str, float, str], object],
) -> None:
    before, after = rows[("motion_blur_px", 31, "before")], rows[("motion_blur_px", 31, "after")]
    assert before.reasons.get("blurred", 0) == 0  # type: ignore[attr-defined]
    assert after.reasons.get("blurred", 0) >= 3  # type: ignore[attr-defined]
    assert after.justified * 2 > after.abstained  # type: ignore[attr-defined]


def test_sensor_noise_does_not_make_a_face_look_sharp_or_blurred(
    rows: dict[tuple[str, float, str], object],
) -> None:
    """Median over the faces: the raw Laplacian variance (the old figure) grows 5x and more with
    sigma-60 noise; the sharpness index stays within a factor of 2 of the clean faces'."""
    clean, noisy = rows[("clean", 0, "after")], rows[("noise", 60, "after")]
    assert noisy.reasons.get("blurred", 0) == 0  # type: ignore[attr-defined]
    assert noisy.sharpness > 5 * clean.sharpness  # type: ignore[attr-defined]
    assert noisy.sharpness_denoised < 2 * clean.sharpness_denoised  # type: ignore[attr-defined]
