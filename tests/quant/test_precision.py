"""int8 variants: manifest selection, the int8 I/O adapter, and how ``auto`` decides."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ModelError
from agent.vision.manifest import default_models_dir, model_spec
from agent.vision.pipeline import VisionPipeline
from agent.vision.precision import (
    QuantizedModel,
    auto_choice,
    measure_choice,
    pick_precisions,
    probe_seconds,
    quantize,
    with_float_io,
)
from agent.vision.runtime import BACKENDS, Model, QuantParams, dequantize
from agent.vision.settings import VisionConfig

MODELS = default_models_dir()


def test_quantize_rounds_clips_and_dequantize_inverts_within_half_a_step() -> None:
    p = QuantParams(scale=0.5, zero_point=-3, dtype=np.int8)
    x = np.array([-100.0, -1.3, 0.0, 0.26, 70.0], np.float32)
    q = np.zeros(5, np.int8)
    quantize(x, p, q)
    assert q.tolist() == [-128, -6, -3, -2, 127]
    back = dequantize(q, p)
    assert np.all(np.abs(back[1:4] - x[1:4]) <= 0.25)
    assert back[0] == (-128 + 3) * 0.5
    assert back[-1] == (127 + 3) * 0.5


def test_a_float_output_of_an_int8_input_model_is_passed_through_not_zeroed() -> None:
    out = np.array([0.25, -1.5], np.float32)
    back = dequantize(out, QuantParams(scale=0.0, zero_point=0, dtype=np.float32))
    assert back.tolist() == [0.25, -1.5]
    assert back is not out


def test_manifest_int8_variant_has_its_own_file_and_hash_and_float_is_unchanged() -> None:
    f = model_spec(MODELS, "face_detection_full_range")
    q = model_spec(MODELS, "face_detection_full_range", precision="int8")
    assert f.path.name == "face_detection_full_range.tflite"
    assert f.precision == "float"
    assert f.sha256 == "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"
    assert q.path.name == "face_detection_full_range_int8.tflite"
    assert q.precision == "int8"
    assert q.sha256 != f.sha256
    assert q.anchors == f.anchors


def test_asking_for_a_missing_variant_names_the_model_what_exists_and_the_fix() -> None:
    with pytest.raises(ModelError) as e:
        model_spec(MODELS, "face_detection_short_range", precision="int8")
    msg = str(e.value)
    assert "'face_detection_short_range' has no int8 variant (it has: float)" in msg
    assert "tools/quantize_models.py" in msg
    assert "vision.precision to float" in msg


def test_altered_int8_file_is_refused_by_hash(tmp_path: Path) -> None:
    shutil.copytree(MODELS, tmp_path / "m")
    target = tmp_path / "m" / "emotion_fer_int8.tflite"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelError, match=r"emotion_fer_int8.tflite has sha256 .* but the manifest expects"):
        model_spec(tmp_path / "m", "emotion", precision="int8")


def test_int8_models_take_and_give_int8_and_the_adapter_feeds_them_floats() -> None:
    spec = model_spec(MODELS, "emotion", precision="int8")
    raw = BACKENDS["cpu"].open(spec, 1)
    assert np.dtype(raw.input_dtype) == np.int8
    model = with_float_io(raw)
    assert isinstance(model, QuantizedModel)
    float_model = with_float_io(BACKENDS["cpu"].open(model_spec(MODELS, "emotion"), 1))
    assert type(float_model).__name__ == "Model"  # float I/O: left as it is
    x = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(1, 64, 64, 1)
    (pq,) = model.run(x)
    (pf,) = float_model.run(x)
    assert pq.dtype == np.float32
    assert abs(float(pq.sum()) - 1.0) < 0.02
    assert int(pq.argmax()) == int(pf.argmax())


def test_adapter_zeroes_its_float_staging_buffer_with_the_tensor() -> None:
    model = with_float_io(BACKENDS["cpu"].open(model_spec(MODELS, "emotion", precision="int8"), 1))
    model.fill_input(lambda a: a.fill(0.7))
    assert not model.input_is_zero()
    model.zero_input()
    assert model.input_is_zero()
    assert isinstance(model, QuantizedModel)
    assert not np.any(model._staging)


def test_int8_pipeline_finds_the_astronaut_and_agrees_on_her_emotion(media: Path) -> None:
    img = np.ascontiguousarray(cv2.imread(str(media / "astronaut.png"), cv2.IMREAD_COLOR))
    results = {}
    for precision in ("float", "int8"):
        p = VisionPipeline.from_config(VisionConfig(accelerator="cpu", precision=precision))
        assert p.detector.spec.precision == precision
        assert p.classifier.spec.precision == precision
        faces = p.analyze(img.copy())
        assert p.scratch_is_zero()
        p.close()
        assert len(faces) == 1
        assert faces[0].probs is not None
        results[precision] = faces[0]
    f, q = results["float"], results["int8"]
    assert max(abs(a - b) for a, b in zip(f.box, q.box, strict=True)) < 0.02
    assert max(f.probs or (), key=lambda lp: lp[1])[0] == max(q.probs or (), key=lambda lp: lp[1])[0]


def test_auto_takes_int8_only_when_it_met_the_goal_and_is_ten_percent_faster() -> None:
    assert auto_choice(1.0, 0.5, eligible=True) == "int8"
    assert auto_choice(1.0, 0.9, eligible=True) == "int8"
    assert auto_choice(1.0, 0.95, eligible=True) == "float"
    assert auto_choice(1.0, 0.1, eligible=False) == "float"
    assert auto_choice(1.0, None, eligible=True) == "float"


def test_probe_reports_the_median_of_timed_invokes() -> None:
    model = BACKENDS["cpu"].open(model_spec(MODELS, "emotion"), 1)
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # invokes of 1, 3 and 2 s
    assert probe_seconds(model, runs=3, timer=lambda: next(ticks)) == 2.0


def test_auto_skips_the_probe_for_a_variant_that_missed_the_goal_and_says_why() -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    verdict = manifest["models"]["face_detection_full_range"]["variants"]["int8"]["accuracy"]["meets_goal"]
    choice = measure_choice(MODELS, "face_detection_full_range", 1)
    assert verdict is False  # the report's figures (docs/quantization.md)
    assert choice.precision == "float"
    assert choice.float_ms is None
    assert "did not meet the accuracy goal" in choice.reason


def test_auto_measures_an_eligible_model_here(caplog: pytest.LogCaptureFixture) -> None:
    choice = measure_choice(MODELS, "emotion", 1)
    assert choice.eligible
    assert choice.float_ms is not None
    assert choice.int8_ms is not None
    assert choice.float_ms > 0
    assert choice.int8_ms > 0
    if abs(choice.int8_ms / choice.float_ms - 0.9) > 0.01:  # not on the rounding edge
        assert choice.precision == auto_choice(choice.float_ms, choice.int8_ms, eligible=True)
    caplog.set_level("INFO")
    picks = pick_precisions(MODELS, ["face_detection_short_range", "emotion"], "auto", 1)
    assert picks[0] == "float"
    assert "face_detection_short_range runs float (no int8 variant in the manifest)" in caplog.text
    assert "vision.precision auto: emotion runs" in caplog.text


def test_unknown_precision_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ModelError, match=r"vision.precision 'half' is unknown; allowed: float, int8, auto"):
        pick_precisions(MODELS, ["emotion"], "half", 1)


def test_coral_without_a_compiled_int8_model_says_where_the_manifest_names_it() -> None:
    spec = model_spec(MODELS, "emotion", precision="int8")
    why = BACKENDS["coral"].probe(spec)
    assert why is not None
    assert "no Edge TPU variant of emotion (models/manifest.json 'variants.int8.edgetpu')" in why
    assert "edgetpu_compiler" in why


def test_quantize_leaves_no_temporary_derived_from_the_pixels() -> None:
    """Measured with tracemalloc (NumPy reports its buffers to it): with the model's scratch
    buffer, quantizing a 128 x 128 x 3 input allocates nothing near the input's size, and the
    scratch is zero afterwards. Before, three float temporaries of the input's size were made
    and freed with the pixel values in them."""
    p = QuantParams(scale=1 / 127.5, zero_point=-1, dtype=np.int8)
    x = np.linspace(-1, 1, 128 * 128 * 3, dtype=np.float32).reshape(1, 128, 128, 3)
    q = np.zeros(x.shape, np.int8)
    scratch = np.zeros(x.shape, np.float32)
    tracemalloc.start()
    try:
        quantize(x, p, q, scratch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes // 10
    assert not np.any(scratch)
    expected = np.clip(np.rint(x / p.scale) + p.zero_point, -128, 127).astype(np.int8)
    assert np.array_equal(q, expected)


def _input_bytes(model: Model) -> npt.NDArray[np.generic]:
    view = model._it.tensor(model.input_index)
    out = np.array(view(), copy=True)
    del view
    return out


@pytest.mark.parametrize("name", ["face_detection_full_range", "emotion"])
def test_the_table_lookup_quantizes_pixels_as_the_float_path_does_byte_for_byte(name: str) -> None:
    """``QuantizedModel.fill_unit_rows`` (one table lookup) against the path it replaces:
    scaled to [-1, 1] in float32, then quantized; every value 0..255, padded rows, any place."""
    model = with_float_io(BACKENDS["cpu"].open(model_spec(MODELS, name, precision="int8"), 1))
    assert isinstance(model, QuantizedModel)
    h, w, c = model.input_shape[1:]
    rng = np.random.default_rng(11)
    for rows in (h, h // 2 + 3, 1):
        for _ in range(5):
            pixels = rng.integers(0, 256, (rows, w, c), dtype=np.uint8)
            y = (h - rows) // 2
            Model.fill_unit_rows(model, pixels, y)  # the float staging path
            expected = _input_bytes(model)
            model.zero_input()
            model.fill_unit_rows(pixels, y)
            assert np.array_equal(_input_bytes(model), expected)
            model.zero_input()
            assert model.input_is_zero()
    every = (np.arange(h * w * c) % 256).astype(np.uint8).reshape(h, w, c)  # each value, many places
    Model.fill_unit_rows(model, every, 0)
    expected = _input_bytes(model)
    model.zero_input()
    model.fill_unit_rows(every, 0)
    assert np.array_equal(_input_bytes(model), expected)
