"""The pure parts of tools/quant_experiments.py: the MSE range search and the dev figures.
(The variants themselves need the quantizer's venv and 15 minutes: docs/quantization.md.)"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module("quant_experiments")
    finally:
        sys.path.remove(str(ROOT / "tools"))


def histogram(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.histogram(values, 2048, (lo, hi))[0].astype(np.float64)


def test_a_long_tailed_activation_gets_a_clipped_range_with_less_error(tool: ModuleType) -> None:
    """A RELU output with one far outlier that would stretch the 256 steps: clipping it costs
    less than the coarser rounding of every other value."""
    rng = np.random.default_rng(3)
    values = np.concatenate([np.abs(rng.normal(0, 1, 200_000)), [40.0]])
    lo, hi = 0.0, float(values.max())
    h = histogram(values, lo, hi)
    a, b = tool.mse_range(h, lo, hi)
    assert a == 0.0  # nothing negative: the low end stays at zero
    assert 2.0 < b <= 0.85 * hi
    assert tool.range_error(h, lo, hi, a, b) < 0.85 * tool.range_error(h, lo, hi, lo, hi)


def test_a_uniform_activation_keeps_its_whole_range(tool: ModuleType) -> None:
    rng = np.random.default_rng(4)
    values = rng.uniform(-3.0, 5.0, 200_000)
    h = histogram(values, -3.0, 5.0)
    a, b = tool.mse_range(h, -3.0, 5.0)
    assert a == pytest.approx(-3.0)
    assert b == pytest.approx(5.0)


def test_dev_figures_count_anchors_near_the_threshold_and_those_that_cross_it(tool: ModuleType) -> None:
    fl = np.array([[-10.0, -1.0, -0.1, 0.2, 2.0, 10.0]], np.float32)
    ql = np.array([[-10.0, -1.5, 0.1, -0.2, 2.5, 12.0]], np.float32)
    d = tool.dev_metrics(fl, ql)
    assert d["anchors"] == 4  # |float logit| < 3
    assert (d["lost"], d["gained"]) == (1, 1)  # 0.2 -> -0.2 lost, -0.1 -> 0.1 gained
    errors = np.array([-0.5, 0.2, -0.4, 0.5])
    assert d["rms"] == pytest.approx(round(float(np.sqrt((errors**2).mean())), 3))
    assert d["mean"] == pytest.approx(round(float(errors.mean()), 3))
