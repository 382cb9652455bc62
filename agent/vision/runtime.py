"""Inference runtime: LiteRT (or tflite_runtime) on the CPU, or a Coral Edge TPU delegate.

Backends are small plugins in an explicit registry (``BACKENDS``), chosen by
``vision.accelerator``: ``cpu``, ``coral`` or ``auto`` (Coral when its library, device and an
Edge TPU model are all present, else CPU with one log line). A selected backend that is missing
fails with what to install. Every import happens when a model is opened, never at import time.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from agent.caught_stderr import caught_stderr
from agent.errors import BackendUnavailable, ModelError, RuntimeFailure
from agent.vision.edgetpu import EDGETPU_LIBRARY, coral_problem
from agent.vision.manifest import ModelSpec, verify_file

logger = logging.getLogger(__name__)

CORAL_INSTALL = (
    "install the Edge TPU runtime `libedgetpu1-std` from Coral's apt repository "
    "(sudo tools/coral-setup, docs/coral.md), plug in the Coral USB Accelerator "
    "(or PCIe card with the gasket driver, /dev/apex_0), and give the agent access to it; "
    "or set vision.accelerator to cpu or auto"
)

F32 = npt.NDArray[np.float32]
T = TypeVar("T")
M = TypeVar("M", bound="Model")


def interpreter_module() -> ModuleType:
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter``."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)  # lazy: no import-time cost or probing
        except ImportError:
            continue
    raise BackendUnavailable(
        "no TFLite runtime is installed: `pip install ai-edge-litert` "
        "(or `tflite-runtime` on older systems)"
    )


@dataclass(frozen=True)
class QuantParams:
    """Affine int8/uint8 quantization of one tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int
    dtype: Any

    @classmethod
    def of(cls, detail: dict[str, Any]) -> QuantParams:
        scale, zero_point = detail["quantization"]
        return cls(float(scale), int(zero_point), detail["dtype"])

    @property
    def bounds(self) -> tuple[int, int]:
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)


def dequantize(values: npt.NDArray[Any], params: QuantParams) -> F32:
    """Real values of an integer output; a float output (a model quantized only inside, its
    scale 0) is passed through as a copy instead of being multiplied to zeros."""
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32, copy=True)
    return ((values.astype(np.float32) - params.zero_point) * params.scale).astype(np.float32)


class Model:
    """One loaded interpreter with a single input tensor; inputs are zeroed on request."""

    def __init__(self, interpreter: Any, name: str, backend: str) -> None:
        self._it = interpreter
        self.name = name
        self.backend = backend
        inp = interpreter.get_input_details()[0]
        self.input_index: int = int(inp["index"])
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inp["shape"])
        self.input_dtype: Any = inp["dtype"]
        self.output_indices: tuple[int, ...] = tuple(
            int(d["index"]) for d in interpreter.get_output_details()
        )
        self.output_shapes: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(n) for n in d["shape"]) for d in interpreter.get_output_details()
        )

    def run(self, tensor: F32) -> list[F32]:
        """Copy ``tensor`` in, invoke, and return copies of every output."""
        self._it.set_tensor(self.input_index, tensor)
        return self.run_in_place()

    def fill_input(self, write: Callable[[F32], object]) -> None:
        """Let ``write`` fill the input tensor in place (no copy). The view is dropped before
        returning, since the runtime refuses to invoke while a view of its memory is alive."""
        view = self._it.tensor(self.input_index)
        write(view())
        del view

    def fill_unit_rows(self, pixels: npt.NDArray[np.uint8], y: int = 0) -> None:
        """Write 8-bit ``pixels`` (H x W x C, H rows of the input from row ``y``, whole rows)
        scaled to [-1, 1] (x / 127.5 - 1) into the input; the rows above and below are -1
        (black)."""
        self.fill_input(lambda a: fill_unit_rows(a.reshape(a.shape[-3:]), pixels, y))

    @property
    def output_quantization(self) -> tuple[QuantParams | None, ...]:
        """Per output: how ``invoke_and_read`` hands it over, None for plain float32."""
        return (None,) * len(self.output_indices)

    def invoke_and_read(self, read: Callable[[list[npt.NDArray[Any]]], T]) -> T:
        """Invoke on the input as it is and let ``read`` look at the outputs in place (no copy),
        as the interpreter holds them: float32, or integers quantized as ``output_quantization``
        says (an int8 detector's 37 k regressor values are dequantized only for the few rows
        its decoder keeps). ``read`` must return plain values or copies: the views die when it
        returns."""
        self._it.invoke()
        views = [self._it.tensor(i) for i in self.output_indices]
        arrays = [v() for v in views]
        try:
            return read(arrays)
        finally:
            del arrays, views

    def run_in_place(self) -> list[F32]:
        """Invoke on the input as it is and return copies of every output."""
        self._it.invoke()
        return [self._it.get_tensor(i) for i in self.output_indices]

    def close(self) -> None:
        """Drop the interpreter (its memory goes with it); later calls raise RuntimeFailure."""
        self._it = _Closed(self.name)

    def record_invokes(self) -> list[float]:
        """From now on, append the wall seconds of each ``invoke`` to the returned list
        (``bench``): the model's code is unchanged and a model nobody times pays nothing."""
        timed = _TimedInterpreter(self._it)
        self._it = timed
        return timed.seconds

    def reopen_as(self, kind: type[M]) -> M:
        """The same interpreter behind another kind of model (``precision.QuantizedModel``)."""
        return kind(self._it, self.name, self.backend)

    def invoke(self) -> None:
        """Invoke on whatever the input tensor holds (for raw timing)."""
        self._it.invoke()

    def zero_input(self) -> None:
        """Overwrite the interpreter's input tensor, which held pixels, with zeros."""
        self.fill_input(lambda a: a.fill(0))

    def input_is_zero(self) -> bool:
        view = self._it.tensor(self.input_index)
        zero = not bool(np.any(view()))
        del view
        return zero


def to_unit_range(pixels: npt.NDArray[np.uint8], out: npt.NDArray[np.float32]) -> None:
    """[0, 255] -> [-1, 1] (x / 127.5 - 1) in one OpenCV pass."""
    cv2.addWeighted(pixels, 1 / 127.5, pixels, 0.0, -1.0, dst=out, dtype=cv2.CV_32F)


def fill_unit_rows(out: npt.NDArray[np.float32], pixels: npt.NDArray[np.uint8], y: int) -> None:
    """Write an image that spans whole rows at row ``y``; the padding above and below is black (-1).
    An image that fills the input (a face crop) has no padding: no call for it, since every call
    right after an invoke runs on cold caches (docs/vision.md)."""
    end = y + pixels.shape[0]
    if y:
        out[:y].fill(-1.0)
    if end < out.shape[0]:
        out[end:].fill(-1.0)
    to_unit_range(pixels, out[y:end])


class _Closed:
    """Stands in for a released interpreter: any use says so instead of crashing obscurely."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise RuntimeFailure(f"the {self._name} model was closed (VisionPipeline.close); open a new pipeline")


class _TimedInterpreter:
    """Stands in for a model's interpreter: times each ``invoke``, passes everything else on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds: list[float] = []

    def invoke(self) -> None:
        t0 = time.perf_counter()
        self._inner.invoke()
        self.seconds.append(time.perf_counter() - t0)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


@dataclass(frozen=True)
class Backend:
    """A way to open a model: its key, whether it is usable here, and the opener."""

    key: str
    probe: Callable[[ModelSpec], str | None]
    """None when usable for this model, else why not (with what to install)."""
    open: Callable[[ModelSpec, int], Model]


def _open_cpu(spec: ModelSpec, threads: int) -> Model:
    mod = interpreter_module()
    said: list[str] = []
    try:
        it = mod.Interpreter(model_path=str(spec.path), num_threads=threads)
        with caught_stderr() as said:
            it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"model file {spec.path} cannot be loaded by the TFLite runtime: {exc}") from exc
    finally:
        _relog(said, spec.name)
    return _fresh(Model(it, spec.name, "cpu"))


def _relog(lines: list[str], model: str) -> None:
    """What LiteRT printed while preparing ``model``, as log records: its INFO lines (the XNNPACK
    delegate created) at debug level, anything else as a warning."""
    for line in lines:
        info = line.startswith("INFO: ")
        (logger.debug if info else logger.warning)("LiteRT (%s): %s", model, line.removeprefix("INFO: "))


def _fresh(model: Model) -> Model:
    """The interpreter's arena comes from the heap as it is, so a new input tensor holds what
    freed memory held before (a frame's bytes, in a process that has decoded frames): zero it
    before the first frame, so that "all zero between calls" holds for a model not yet used."""
    model.zero_input()
    return model


def _probe_coral(spec: ModelSpec) -> str | None:
    """The compiled model, libedgetpu, then the device and its group (agent/vision/edgetpu.py)."""
    return coral_problem(spec)


def _open_coral(spec: ModelSpec, threads: int) -> Model:
    why = _probe_coral(spec)
    if why is not None:
        raise BackendUnavailable(f"vision.accelerator coral: {why}")
    if spec.edgetpu_path is None or spec.edgetpu_sha256 is None:  # excluded by the probe
        raise BackendUnavailable(f"vision.accelerator coral: no Edge TPU variant of {spec.name}")
    path = verify_file(spec.edgetpu_path, spec.edgetpu_sha256)
    mod = interpreter_module()
    try:
        delegate = mod.load_delegate(EDGETPU_LIBRARY)
        it = mod.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=[delegate])
        it.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendUnavailable(
            f"vision.accelerator coral: the Edge TPU could not be opened ({exc}); {CORAL_INSTALL}"
        ) from exc
    return _fresh(Model(it, spec.name, "coral"))


BACKENDS: dict[str, Backend] = {
    "cpu": Backend("cpu", lambda spec: None, _open_cpu),
    "coral": Backend("coral", _probe_coral, _open_coral),
}


def choose_backend(accelerator: str, specs: list[ModelSpec]) -> Backend:
    """Resolve ``cpu | coral | auto`` once for all models; ``auto`` logs one line when it falls back."""
    if accelerator == "auto":
        reasons = [r for r in (BACKENDS["coral"].probe(s) for s in specs) if r is not None]
        if not reasons:
            return BACKENDS["coral"]
        logger.info(  # the first clause: how to compile and install is for vision.accelerator: coral
            "no usable Coral Edge TPU, running inference on the CPU: %s (vision.accelerator: coral "
            "says what to do)",
            reasons[0].split(";", 1)[0],
            extra={"fields": {"accelerator": "cpu", "requested": "auto"}},
        )
        logger.debug("why no Coral Edge TPU: %s", reasons[0])
        return BACKENDS["cpu"]
    if accelerator not in BACKENDS:
        raise BackendUnavailable(
            f"vision.accelerator {accelerator!r} is unknown; allowed: cpu, coral, auto"
        )
    backend = BACKENDS[accelerator]
    for spec in specs:
        why = backend.probe(spec)
        if why is not None:
            raise BackendUnavailable(f"vision.accelerator {accelerator}: {why}")
    return backend
