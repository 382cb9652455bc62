"""Model precision: the vendored float models, their int8 variants, or ``auto`` (measured here).

``vision.precision``:

- ``float``: the vendored files (BlazeFace with float16 weights, FER with int8 weights; all
  compute and I/O in float32);
- ``int8``: the full-integer variants made by ``tools/quantize_models.py`` (int8 weights,
  activations, input and output);
- ``auto``: per model, int8 only when (1) the manifest says its variant met the accuracy goal
  (``variants.int8.accuracy.meets_goal``, written by ``tools/accuracy_report.py --write``) and
  (2) a short timed probe on this machine finds it at least ``AUTO_MARGIN`` faster than float.
  The probe runs once when the models are opened (a few dozen invokes on a zeroed input, about
  a second); nothing is assumed from the CPU's name.

An int8 model takes and gives int8 tensors. ``QuantizedModel`` keeps the ``Model`` interface the
detector and classifier use: they write float32 into a staging buffer, which is quantized into
the input tensor (``q = round(x / scale) + zero_point``, clipped), and the outputs come back
dequantized (``x = (q - zero_point) * scale``). The staging buffer holds pixels too, so
``zero_input`` zeroes it with the tensor.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import ModelError
from agent.vision.manifest import int8_variant, manifest_entry, model_spec
from agent.vision.runtime import BACKENDS, F32, Model, QuantParams, dequantize, to_unit_range

logger = logging.getLogger(__name__)

Precision = Literal["float", "int8", "auto"]
T = TypeVar("T")
AUTO_MARGIN = 0.9
"""``auto`` picks int8 only when it takes at most 90 % of the float model's time here."""
PROBE_RUNS = 15


def quantize(values: F32, params: QuantParams, out: npt.NDArray[Any], scratch: F32 | None = None) -> None:
    """Write ``round(values / scale) + zero_point``, clipped to the dtype, into ``out``.

    Every step writes into ``scratch`` (a float32 buffer of ``values``' shape, zeroed before
    return): an expression such as ``np.rint(values / scale) + zero_point`` would leave three
    frame-sized temporaries, derived from pixels, freed without being zeroed."""
    lo, hi = params.bounds
    work = np.zeros(values.shape, np.float32) if scratch is None else scratch
    try:
        np.divide(values, params.scale, out=work)
        np.rint(work, out=work)
        np.add(work, params.zero_point, out=work)
        np.clip(work, lo, hi, out=work)
        np.copyto(out, work.reshape(out.shape), casting="unsafe")
    finally:
        work.fill(0)  # it held pixels too


def unit_range_lut(params: QuantParams) -> tuple[npt.NDArray[Any], int]:
    """The quantized value of each 8-bit pixel value after ``to_unit_range`` (a 256-entry
    table in the input's dtype), and that of black padding (-1)."""
    values = np.arange(256, dtype=np.uint8).reshape(1, 256, 1)
    unit = np.zeros(values.shape, np.float32)
    to_unit_range(values, unit)
    lut = np.zeros(values.shape, params.dtype)
    quantize(unit, params, lut)
    black = np.zeros(1, params.dtype)
    quantize(np.full(1, -1.0, np.float32), params, black)
    return lut.reshape(1, 256), int(black[0])


def is_quantized_io(model: Model) -> bool:
    return np.dtype(model.input_dtype) in (np.dtype(np.int8), np.dtype(np.uint8))


class QuantizedModel(Model):
    """A ``Model`` over an int8-in, int8-out interpreter that callers feed and read in float32."""

    def __init__(self, interpreter: Any, name: str, backend: str) -> None:
        super().__init__(interpreter, name, backend)
        self.input_params = QuantParams.of(interpreter.get_input_details()[0])
        self.output_params = tuple(QuantParams.of(d) for d in interpreter.get_output_details())
        self._staging: F32 = np.zeros(self.input_shape, np.float32)
        self._scratch: F32 = np.zeros(self.input_shape, np.float32)
        self._unit_lut = unit_range_lut(self.input_params)
        self._staged = False

    def fill_unit_rows(self, pixels: npt.NDArray[np.uint8], y: int = 0) -> None:
        """As ``Model.fill_unit_rows``, quantized in one table lookup per value: the float path
        (scale to [-1, 1] in a float32 staging buffer, then divide, round, shift, clip and copy)
        gives each 8-bit value the same integer wherever it stands, so the table is that path
        run once over 0..255 (a test compares every byte). The detector's 192 x 108 rows: 77 us
        by the float path, 21 us by the table (warm, one core)."""
        view = self._it.tensor(self.input_index)
        out = view().reshape(self.input_shape[-3:])
        lut, black = self._unit_lut
        end = y + pixels.shape[0]
        if y:  # no call for padding there is none of (runtime.fill_unit_rows)
            out[:y].fill(black)
        if end < out.shape[0]:
            out[end:].fill(black)
        cv2.LUT(pixels, lut, dst=out[y:end])
        del out, view

    def run(self, tensor: F32) -> list[F32]:
        self.fill_input(lambda a: a.__setitem__(..., tensor))
        return self.run_in_place()

    def fill_input(self, write: Callable[[F32], object]) -> None:
        """``write`` fills a float32 staging buffer, which is then quantized into the tensor."""
        self._staged = True
        write(self._staging)
        view = self._it.tensor(self.input_index)
        quantize(self._staging, self.input_params, view(), self._scratch)
        del view

    def run_in_place(self) -> list[F32]:
        self._it.invoke()
        return [
            dequantize(self._it.get_tensor(i), p)
            for i, p in zip(self.output_indices, self.output_params, strict=True)
        ]

    @property
    def output_quantization(self) -> tuple[QuantParams | None, ...]:
        return tuple(
            None if np.issubdtype(p.dtype, np.floating) else p for p in self.output_params
        )

    def zero_input(self) -> None:
        if self._staged:  # the table path never writes it: 442 KB not zeroed again per frame
            self._staging.fill(0)
            self._staged = False
        view = self._it.tensor(self.input_index)
        view().fill(0)
        del view

    def input_is_zero(self) -> bool:
        return super().input_is_zero() and not bool(np.any(self._staging))


def with_float_io(model: Model) -> Model:
    """``model`` itself when it takes float32, else a ``QuantizedModel`` over its interpreter."""
    if isinstance(model, QuantizedModel) or not is_quantized_io(model):
        return model
    return model.reopen_as(QuantizedModel)


def probe_seconds(
    model: Model, runs: int = PROBE_RUNS, timer: Callable[[], float] = time.perf_counter
) -> float:
    """Median seconds of one invoke on a zeroed input (after one warm-up invoke)."""
    model.zero_input()
    model.invoke()
    samples = []
    for _ in range(runs):
        t0 = timer()
        model.invoke()
        samples.append(timer() - t0)
    return statistics.median(samples)


def auto_choice(float_s: float, int8_s: float | None, eligible: bool) -> Literal["float", "int8"]:
    """int8 when its variant met the accuracy goal and it is clearly faster here; else float."""
    if not eligible or int8_s is None:
        return "float"
    return "int8" if int8_s <= AUTO_MARGIN * float_s else "float"


@dataclass(frozen=True)
class Choice:
    """What ``auto`` decided for one model, and why (logged)."""

    model: str
    precision: Literal["float", "int8"]
    float_ms: float | None
    int8_ms: float | None
    has_int8: bool
    eligible: bool

    @property
    def reason(self) -> str:
        if not self.has_int8:
            return "no int8 variant in the manifest"
        if not self.eligible:
            return "its int8 variant did not meet the accuracy goal (docs/quantization.md)"
        verdict = "faster" if self.precision == "int8" else "not at least 10 % faster"
        return f"int8 {self.int8_ms} ms vs float {self.float_ms} ms per invoke here: {verdict}"


def log_choice(choice: Choice) -> None:
    logger.info(
        "vision.precision auto: %s runs %s (%s)",
        choice.model,
        choice.precision,
        choice.reason,
        extra={"fields": {"model": choice.model, "precision": choice.precision, "requested": "auto"}},
    )


def _variant_state(models_dir: Path, name: str) -> tuple[bool, bool]:
    """(has an int8 variant, that variant met the accuracy goal) from the manifest."""
    variant = int8_variant(manifest_entry(models_dir, name))
    if variant is None:
        return False, False
    accuracy = variant.get("accuracy")
    return True, isinstance(accuracy, dict) and accuracy.get("meets_goal") is True


def measure_choice(models_dir: Path, name: str, threads: int) -> Choice:
    """Time the float and int8 model on the CPU and decide; no probe when int8 may not be used."""
    has_int8, eligible = _variant_state(models_dir, name)
    if not (has_int8 and eligible):
        return Choice(name, "float", None, None, has_int8, eligible)
    float_s = probe_seconds(BACKENDS["cpu"].open(model_spec(models_dir, name), threads))
    int8_spec = model_spec(models_dir, name, precision="int8")
    int8_s = probe_seconds(with_float_io(BACKENDS["cpu"].open(int8_spec, threads)))
    return Choice(
        name, auto_choice(float_s, int8_s, eligible), round(float_s * 1000, 3), round(int8_s * 1000, 3),
        has_int8, eligible,
    )


def pick_precisions(models_dir: Path, names: list[str], requested: str, threads: int) -> list[str]:
    """The precision of each model: ``requested`` itself, or per model for ``auto`` (logged)."""
    if requested in ("float", "int8"):
        return [requested] * len(names)
    if requested != "auto":
        raise ModelError(f"vision.precision {requested!r} is unknown; allowed: float, int8, auto")
    out: list[str] = []
    for name in names:
        choice = measure_choice(models_dir, name, threads)
        log_choice(choice)
        out.append(choice.precision)
    return out
