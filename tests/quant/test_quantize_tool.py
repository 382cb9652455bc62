"""tools/quantize_models.py reproduces the vendored int8 files byte for byte, in its own venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "quant-venv"
PY = VENV / "bin" / "python"


def quant_python() -> Path:
    """The quantizer's venv (tools/quantize-requirements.txt), created on first use; never the agent's."""
    if not PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        req = ROOT / "tools" / "quantize-requirements.txt"
        subprocess.run([str(PY), "-m", "pip", "install", "-q", "-r", str(req)], check=True, timeout=900)
    return PY


@pytest.mark.slow
def test_check_rebuilds_identical_int8_models_from_the_pinned_versions() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [str(quant_python()), str(ROOT / "tools" / "quantize_models.py"), "--check"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "face_detection_full_range: identical" in done.stdout
    assert "emotion: identical" in done.stdout


def test_the_agent_venv_has_no_quantizer_or_tensorflow() -> None:
    """The agent never depends on the quantizer at run time."""
    for name in ("ai_edge_quantizer", "tensorflow"):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, check=False)
        assert done.returncode != 0, f"{name} is importable in the agent's venv"
