#!/usr/bin/env python3
"""Post-training variants of the int8 full-range detector that were tried and not shipped.

Reproduces the figures in docs/quantization.md ("Bias correction and MSE ranges"); slow
(about 15 minutes: each bias-correction pass re-runs the int8 model once per convolution).
Run in the quantizer's venv:

    PYTHONPATH=. nice -n 15 .cache/quant-venv/bin/python tools/quant_experiments.py [VARIANT ...]

Variants: ``baseline`` (the shipped recipe); ``bias`` (sequential empirical bias correction,
per channel, of every convolution: Nagel et al. 2019); ``bias-inrange`` (the same, measured
only where the float value is inside the int8 range, and non-negative before a RELU); ``head``
(the score head's bias shifted by the mean float-int8 logit gap over calibration anchors near
the threshold); ``bias+head``; ``mse`` (per-tensor activation ranges minimising clipping plus
rounding error on the calibration histograms); ``mse+head``; ``mse+bias``; ``mse+bias-inrange``.

For each it prints two things: ``dev``, the score-logit error on the (mirrored) calibration
inputs over anchors whose float logit is within +-3 (RMS, mean, anchors that cross the
threshold either way), which is what a variant may be chosen by; and ``accuracy``, the
accuracy report's missed / extra faces on the unmirrored images. Writes nothing under models/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
os.environ.setdefault("TQDM_DISABLE", "1")

import accuracy_report  # noqa: E402 - tools/ is not a package
import quantize_models as qm  # noqa: E402

NAME = "face_detection_full_range"
HEAD = "classifier_face_4"
SCORES = "reshaped_classifier_face_4"
CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
BINS = 2048
NEAR = 3.0
Arrays = list[npt.NDArray[np.float32]]


def run(model_bytes: bytes, xs: Arrays, names: list[str], *, reference: bool = True) -> dict[str, Arrays]:
    """Real values of the named tensors for each input (reference kernels keep intermediates)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference else OpResolverType.AUTO
    it = Interpreter(model_content=model_bytes, num_threads=1, experimental_preserve_all_tensors=reference,
                     experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = {d["name"]: d for d in it.get_tensor_details()}
    out: dict[str, Arrays] = {n: [] for n in names}
    for x in xs:
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            it.set_tensor(inp["index"], np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8))
        else:
            it.set_tensor(inp["index"], x)
        it.invoke()
        for n in names:
            v = it.get_tensor(details[n]["index"])
            if v.dtype != np.float32:
                s, z = details[n]["quantization"]
                v = (v.astype(np.float32) - z) * s
            out[n].append(np.array(v, np.float32))
    return out


def logits(model_bytes: bytes, xs: Arrays) -> npt.NDArray[np.float32]:
    return np.stack([a.reshape(-1) for a in run(model_bytes, xs, [SCORES], reference=False)[SCORES]])


def dev_metrics(fl: npt.NDArray[np.float32], ql: npt.NDArray[np.float32]) -> dict[str, Any]:
    near = np.abs(fl) < NEAR
    e = (ql - fl)[near]
    return {"rms": round(float(np.sqrt((e**2).mean())), 3), "mean": round(float(e.mean()), 3),
            "anchors": int(near.sum()), "lost": int(((fl >= 0) & (ql < 0)).sum()),
            "gained": int(((fl < 0) & (ql >= 0)).sum())}


def accuracy(model_bytes: bytes) -> dict[str, Any]:
    """The accuracy report's detector figures for ``model_bytes``, on a temporary models folder."""
    tmp = Path(tempfile.mkdtemp())
    try:
        d = tmp / "models"
        shutil.copytree(ROOT / "models", d)
        (d / qm.int8_name(f"{NAME}.tflite")).write_bytes(model_bytes)
        man = json.loads((d / "manifest.json").read_text())
        man["models"][NAME]["variants"]["int8"]["sha256"] = hashlib.sha256(model_bytes).hexdigest()
        (d / "manifest.json").write_text(json.dumps(man))
        r = accuracy_report.compare_detector(d, NAME, list(accuracy_report.images()))
        return {"float": r.float_faces, "int8": r.int8_faces, "missed": r.missed, "extra": r.extra}
    finally:
        shutil.rmtree(tmp)


def calibrate(signed: bytes, xs: Arrays) -> tuple[Any, dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    from ai_edge_quantizer import calibrator, quantizer, recipe  # noqa: PLC0415
    from ai_edge_quantizer.utils import qsv_utils  # noqa: PLC0415

    input_name = Interpreter(model_content=signed).get_signature_list()[qm.SIGNATURE]["inputs"][0]
    q = quantizer.Quantizer(bytearray(signed), recipe.static_wi8_ai8())
    calib = calibrator.Calibrator(bytearray(signed), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({qm.SIGNATURE: [{input_name: s} for s in xs]}, q._recipe_manager)
    return q, calib.get_model_qsvs()


def mse_ranges(signed: bytes, xs: Arrays, qsvs: dict[str, Any]) -> dict[str, Any]:
    """Each activation's [lo, hi] minimising clipping error plus rounding error (step^2 / 12),
    on a 2048-bin histogram of its float values over the calibration inputs (input kept)."""
    names = [n for n in qsvs if n != "input" and float(qsvs[n]["max"].max()) > float(qsvs[n]["min"].min())]
    bounds = {n: (float(qsvs[n]["min"].min()), float(qsvs[n]["max"].max())) for n in names}
    hist = {n: np.zeros(BINS, np.float64) for n in names}
    for n, arrays in run(signed, xs, names).items():
        for a in arrays:
            hist[n] += np.histogram(a.ravel(), BINS, bounds[n])[0]
    out = dict(qsvs)
    for n, h in hist.items():
        a, b = mse_range(h, *bounds[n])
        out[n] = {**qsvs[n], "min": np.full_like(qsvs[n]["min"], a), "max": np.full_like(qsvs[n]["max"], b)}
    return out


def range_error(hist: npt.NDArray[np.float64], lo: float, hi: float, a: float, b: float) -> float:
    """Expected squared error of quantizing, to 256 levels over [a, b], values histogrammed in
    ``hist`` over [lo, hi] (bin centres): clipping outside, step^2 / 12 of rounding inside."""
    edges = np.linspace(lo, hi, len(hist) + 1)
    c = (edges[:-1] + edges[1:]) / 2
    step = (b - a) / 255.0
    per_bin = np.where(c < a, (c - a) ** 2, np.where(c > b, (c - b) ** 2, step * step / 12))
    return float((hist * per_bin).sum())


def mse_range(hist: npt.NDArray[np.float64], lo: float, hi: float) -> tuple[float, float]:
    """The [a, b] of least ``range_error`` on a 64 x 64 grid of shrunk ends (a = 0 when nothing
    is negative, as after a RELU); the full range is the grid's last point."""
    best = (range_error(hist, lo, hi, min(lo, 0.0), hi), min(lo, 0.0), hi)
    for a in [0.0] if lo >= 0 else list(lo * np.linspace(0.1, 1.0, 64)):
        for b in hi * np.linspace(0.1, 1.0, 64):
            best = min(best, (range_error(hist, lo, hi, a, b), a, b))
    return best[1], best[2]


def _name(graph: Any, index: int) -> str:
    n = graph.tensors[index].name
    return n.decode() if isinstance(n, bytes) else str(n)


def _shift_bias(model: Any, op: Any, delta: npt.NDArray[np.float64]) -> None:
    graph = model.subgraphs[0]
    bt = graph.tensors[op.inputs[2]]
    buf = model.buffers[bt.buffer]
    b = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.int32).astype(np.int64)
    b += np.rint(delta / np.asarray(bt.quantization.scale, np.float64)).astype(np.int64)
    buf.data = np.frombuffer(np.clip(b, -(2**31), 2**31 - 1).astype(np.int32).tobytes(), np.uint8)


def bias_correct(unfused: bytes, signed: bytes, xs: Arrays, *, in_range: bool = False) -> bytes:
    """Sequential empirical bias correction: for each convolution in graph order (upstream ones
    already corrected), add the per-channel mean of float minus int8 output to its int8 bias.
    Measured before the RELUs are fused (on the pre-activation). ``in_range``: only where the
    float value is representable (and >= 0 when a RELU reads it), so that deliberately clipped
    tails are not "corrected"."""
    from ai_edge_litert.tools import flatbuffer_utils as fu  # noqa: PLC0415

    model = fu.read_model_from_bytearray(bytearray(unfused))
    graph = model.subgraphs[0]
    convs = [op for op in graph.operators if fu.opcode_to_name(model, op.opcodeIndex) in CONVS]
    readers: dict[int, list[str]] = {}
    for op in graph.operators:
        for t in op.inputs:
            readers.setdefault(int(t), []).append(fu.opcode_to_name(model, op.opcodeIndex))
    names = [_name(graph, op.outputs[0]) for op in convs]
    ref = run(signed, xs, names)
    for op, n in zip(convs, names, strict=True):
        got = run(bytes(fu.convert_object_to_bytearray(model)), xs, [n])[n]
        t = graph.tensors[op.outputs[0]]
        s, z = float(np.asarray(t.quantization.scale)[0]), int(np.asarray(t.quantization.zeroPoint)[0])
        lo, hi = (-128 - z) * s, (127 - z) * s
        if readers.get(int(op.outputs[0])) == ["RELU"]:
            lo = max(lo, 0.0)
        channels = got[0].shape[-1]
        total, count = np.zeros(channels), np.zeros(channels)
        for f, q in zip(ref[n], got, strict=True):
            f2, q2 = f.reshape(-1, channels), q.reshape(-1, channels)
            keep = (f2 >= lo) & (f2 <= hi) if in_range else np.ones_like(f2, bool)
            total += np.where(keep, f2 - q2, 0).sum(0)
            count += keep.sum(0)
        _shift_bias(model, op, np.where(count > 0, total / np.maximum(count, 1), 0.0))
    return bytes(fu.convert_object_to_bytearray(model))


def head_correct(fused: bytes, fl: npt.NDArray[np.float32], xs: Arrays) -> bytes:
    """Shift the score head's bias by the mean float-int8 logit gap over calibration anchors
    whose float logit is within +-3 of the threshold (logit 0)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu  # noqa: PLC0415

    model = fu.read_model_from_bytearray(bytearray(fused))
    graph = model.subgraphs[0]
    op = next(o for o in graph.operators if _name(graph, o.outputs[0]) == HEAD)
    near = np.abs(fl) < NEAR
    _shift_bias(model, op, np.array([float((fl - logits(fused, xs))[near].mean())]))
    return bytes(fu.convert_object_to_bytearray(model))


def variants(signed: bytes, xs: Arrays, fl: npt.NDArray[np.float32]) -> dict[str, Callable[[], bytes]]:
    cache: dict[str, bytes] = {}

    def unfused(ranges: str) -> bytes:
        if ranges not in cache:
            q, qsvs = calibrate(signed, xs)
            if ranges == "mse":
                qsvs = mse_ranges(signed, xs, qsvs)
            qm.share_concat_ranges(signed, qsvs)
            cache[ranges] = bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)
        return cache[ranges]

    fuse = qm.fuse_activations
    return {
        "baseline": lambda: fuse(unfused("minmax")),
        "bias": lambda: fuse(bias_correct(unfused("minmax"), signed, xs)),
        "bias-inrange": lambda: fuse(bias_correct(unfused("minmax"), signed, xs, in_range=True)),
        "head": lambda: head_correct(fuse(unfused("minmax")), fl, xs),
        "bias+head": lambda: head_correct(fuse(bias_correct(unfused("minmax"), signed, xs)), fl, xs),
        "mse": lambda: fuse(unfused("mse")),
        "mse+head": lambda: head_correct(fuse(unfused("mse")), fl, xs),
        "mse+bias": lambda: fuse(bias_correct(unfused("mse"), signed, xs)),
        "mse+bias-inrange": lambda: fuse(bias_correct(unfused("mse"), signed, xs, in_range=True)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variant", nargs="*", help="default: all")
    args = parser.parse_args(argv)
    xs = [qm.letterbox(f, 192) for f in qm.calibration_frames()]
    signed = qm.float_graph((qm.MODELS / f"{NAME}.tflite").read_bytes())
    fl = logits(signed, xs)
    table = variants(signed, xs, fl)
    unknown = [v for v in args.variant if v not in table]
    if unknown:
        allowed = ", ".join(table)
        print(f"quant_experiments: unknown variant {unknown[0]!r}; allowed: {allowed}", file=sys.stderr)
        return 2
    for name in args.variant or list(table):
        data = table[name]()
        print(f"{name}: dev {dev_metrics(fl, logits(data, xs))}; accuracy {accuracy(data)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
