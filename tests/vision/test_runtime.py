"""Inference backends, here without a Coral: coral fails with what to install, auto falls back."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BackendUnavailable
from agent.vision import runtime
from agent.vision.manifest import default_models_dir, model_spec
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig

MODELS = default_models_dir()


@pytest.fixture
def models_with_edgetpu(tmp_path: Path) -> Path:
    """The vendored models plus an Edge TPU entry, as a manifest for a Coral build would have."""
    dest = tmp_path / "models"
    shutil.copytree(MODELS, dest)
    path = dest / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for name, entry in data["models"].items():
        entry["edgetpu"] = {"file": f"{name}_edgetpu.tflite", "sha256": "0" * 64}
    path.write_text(json.dumps(data), encoding="utf-8")
    return dest


def test_libedgetpu_is_absent_here() -> None:
    """The premise of the tests below: no Edge TPU runtime on this machine."""
    assert runtime._probe_coral(model_spec(MODELS, "emotion")) is not None


def test_coral_without_an_edgetpu_model_says_which_model_is_missing() -> None:
    with pytest.raises(BackendUnavailable) as err:
        VisionPipeline.from_config(VisionConfig(accelerator="coral"))
    msg = str(err.value)
    assert msg.startswith("vision.accelerator coral: the manifest has no Edge TPU variant of face_detection_")
    assert "edgetpu_compiler" in msg


def test_coral_without_the_library_says_what_to_install(models_with_edgetpu: Path) -> None:
    with pytest.raises(BackendUnavailable) as err:
        VisionPipeline.from_config(VisionConfig(accelerator="coral", models_dir=models_with_edgetpu))
    msg = str(err.value)
    assert "libedgetpu.so.1 was not found" in msg
    assert "libedgetpu1-std" in msg
    assert "Coral USB Accelerator" in msg
    assert "vision.accelerator to cpu or auto" in msg


def test_auto_falls_back_to_cpu_with_one_log_line(
    models_with_edgetpu: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.vision")
    p = VisionPipeline.from_config(VisionConfig(accelerator="auto", models_dir=models_with_edgetpu))
    assert p.backend == "cpu"
    fallbacks = [r for r in caplog.records if "running inference on the CPU" in r.getMessage()]
    assert len(fallbacks) == 1
    assert "libedgetpu.so.1 was not found" in fallbacks[0].getMessage()
    p.close()


def test_cpu_uses_the_configured_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = runtime.interpreter_module().Interpreter

    def spy(*args: object, num_threads: int, **kwargs: object) -> object:
        seen.append(num_threads)
        return real(*args, num_threads=num_threads, **kwargs)

    monkeypatch.setattr(runtime.interpreter_module(), "Interpreter", spy)
    VisionPipeline.from_config(VisionConfig(accelerator="cpu", threads=2)).close()
    assert seen == [2, 2]


def test_tflite_runtime_is_the_fallback_import(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = type(sys)("tflite_runtime.interpreter")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", type(sys)("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert runtime.interpreter_module() is fake


def test_no_runtime_at_all_says_what_to_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(BackendUnavailable, match=r"pip install ai-edge-litert"):
        runtime.interpreter_module()


def test_importing_the_vision_package_loads_no_runtime_or_model() -> None:
    """Nothing happens at import time: the interpreter is imported when a model is opened."""
    import subprocess  # noqa: PLC0415

    code = (
        "import sys; import agent.vision.pipeline, agent.commands.bench; "
        "print('ai_edge_litert' in sys.modules, 'tflite_runtime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.parametrize("name", ["emotion", "face_detection_full_range", "face_detection_short_range"])
def test_a_model_just_opened_holds_no_leftover_bytes_in_its_input(name: str) -> None:
    """The arena is malloc'd, not zeroed: opened after the heap held other bytes (64 KB and 1 MB
    blocks of 0xAB here; in the service, decoded frames), the emotion model's input held them.
    Seen in CI: a detect-only pipeline whose classifier had never run failed `scratch_is_zero`."""
    spec = model_spec(MODELS, name)
    for size in (4096, 16384, 65536, 262144, 1 << 20):
        junk = [np.full(size, 0xAB, np.uint8) for _ in range(64)]
        del junk
        model = runtime.BACKENDS["cpu"].open(spec, 1)
        assert model.input_is_zero(), size
        model.close()
