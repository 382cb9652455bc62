"""tools/glue_warm_cold.py: replaying the detector's outputs gives the route the same faces."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module("glue_warm_cold")
    finally:
        sys.path.remove(str(ROOT / "tools"))


def test_replayed_outputs_give_the_faces_the_real_invokes_gave(tool: ModuleType, sample_clip: Path) -> None:
    """The modes differ only in what the caches hold, not in the work: same faces every mode."""
    from agent.route import FrameRoute  # noqa: PLC0415

    faces: dict[str, int] = {}
    carry = FrameRoute.carry
    mode = ["real"]

    def counting(route: FrameRoute, frame: object) -> object:
        carried = carry(route, frame)  # type: ignore[arg-type]
        faces[mode[0]] = faces.get(mode[0], 0) + len(carried.faces)
        return carried

    glue_ms = tool.glue_ms

    def per_mode(pipeline: object, det: object, emotion: list[float], frames: list[object], m: str) -> float:
        mode[0] = m
        return float(glue_ms(pipeline, det, emotion, frames, m))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FrameRoute, "carry", counting)
        mp.setattr(tool, "glue_ms", per_mode)
        result = tool.measure(str(sample_clip), "full_range", rounds=1, limit=60)
    assert set(result) == {"real", "replay", "sweep"}
    assert all(len(v) == 1 and v[0] > 0 for v in result.values())
    assert faces["real"] > 0
    assert faces["replay"] * 2 == faces["sweep"] * 2 == faces["real"]  # the recording pass is "real" too
