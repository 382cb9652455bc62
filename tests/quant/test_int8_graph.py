"""The int8 graphs run whole in XNNPACK: no standalone activation op splits them into partitions.

The quantizer left BlazeFace's 47 RELUs as int8 ops of their own; XNNPACK takes RELU only on
float tensors, so the int8 detector ran as 45 delegate partitions, 5x slower than float.
``tools/quantize_models.py`` folds each into the preceding op's fused activation.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from agent.vision.manifest import default_models_dir

ROOT = Path(__file__).resolve().parents[2]
MODELS = default_models_dir()
STANDALONE_ACTIVATIONS = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "TANH", "LOGISTIC"}


def int8_variants() -> dict[str, dict[str, Any]]:
    models = json.loads((MODELS / "manifest.json").read_text())["models"]
    return {n: e["variants"]["int8"] for n, e in models.items() if "int8" in (e.get("variants") or {})}


def int8_files() -> list[str]:
    return [v["file"] for v in int8_variants().values()]


def op_names(model_bytes: bytes) -> Counter[str]:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    ops = model.subgraphs[0].operators
    return Counter(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in ops)


def delegate_partitions(model_bytes: bytes) -> int:
    """XNNPACK delegate nodes after the interpreter applied the delegate: 1 = the whole graph."""
    it = Interpreter(model_content=model_bytes, num_threads=1)
    it.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in it._get_ops_details())


def load_quantizer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quantize_models", ROOT / "tools" / "quantize_models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quantize_models"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("file", int8_files())
def test_vendored_int8_model_has_no_standalone_activation_and_one_delegate_partition(file: str) -> None:
    data = (MODELS / file).read_bytes()
    standalone = {k: v for k, v in op_names(data).items() if k in STANDALONE_ACTIVATIONS}
    assert standalone == {}, f"{file}: standalone activation ops {standalone}"
    assert delegate_partitions(data) == 1, file


@pytest.mark.parametrize("name", sorted(int8_variants()))
def test_manifest_records_the_io_dtypes_the_int8_file_really_has(name: str) -> None:
    """The int8 files take and give int8 tensors (the agent (de)quantizes them itself): the
    manifest once said "float32 input and output". Its ``quantization.io`` must be the file's."""
    variant = int8_variants()[name]
    it = Interpreter(model_path=str(MODELS / variant["file"]))
    found = {
        "input": np.dtype(it.get_input_details()[0]["dtype"]).name,
        "outputs": {d["name"]: np.dtype(d["dtype"]).name for d in it.get_output_details()},
    }
    io = variant["quantization"]["io"]
    assert {k: io[k] for k in ("input", "outputs")} == found, name
    assert found["input"] == "int8"
    assert set(found["outputs"].values()) == {"int8"}
    ops = op_names((MODELS / variant["file"]).read_bytes())
    assert ops["QUANTIZE"] == ops["DEQUANTIZE"] == 0, f"{name}: the note says no (DE)QUANTIZE op"
    assert load_quantizer().io_dtypes((MODELS / variant["file"]).read_bytes()) == found


def test_fusing_folds_every_relu_and_keeps_the_outputs(media: Path) -> None:
    """On the float detector (same 47 RELUs, float kernels), folding changes no output."""
    tool = load_quantizer()
    original = (MODELS / "face_detection_full_range.tflite").read_bytes()
    fused = tool.fuse_activations(original)
    assert op_names(original)["RELU"] == 47
    assert op_names(fused)["RELU"] == 0
    img = cv2.imread(str(media / "astronaut.png"), cv2.IMREAD_COLOR)
    x = tool.letterbox(img, 192)
    outs = []
    for data in (original, fused):
        it = Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(sorted((d["name"], it.get_tensor(d["index"]).copy()) for d in it.get_output_details()))
    for (name_a, a), (name_b, b) in zip(*outs, strict=True):
        assert name_a == name_b
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
