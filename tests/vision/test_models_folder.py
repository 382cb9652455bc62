"""A models folder the installer named (``vision.models_dir``, ``$EMOTION_AGENT_MODELS``) that
holds no manifest is refused naming the setting: the error about the missing manifest told an
installer who mistyped the path to rebuild the models or reinstall the agent (found by a
new-user trial)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.crypto.keys import generate_keypair
from agent.errors import ModelError
from agent.vision.manifest import MODELS_ENV, default_models_dir, models_folder

ROOT = Path(__file__).resolve().parents[2]


def test_a_configured_folder_that_does_not_exist_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        models_folder(tmp_path / "modles")
    said = str(info.value)
    assert said.startswith(f"vision.models_dir is '{tmp_path / 'modles'}', which does not exist")
    assert "remove it to use the models installed with the agent" in said
    assert "rebuild" not in said


def test_a_folder_from_the_environment_without_a_manifest_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with pytest.raises(ModelError) as info:
        models_folder(None)
    said = str(info.value)
    assert said.startswith(f"${MODELS_ENV} is '{tmp_path}', which holds no manifest.json")
    assert "unset it to use the models installed with the agent" in said


def test_the_default_folder_is_taken_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert models_folder(None) == default_models_dir()
    assert models_folder(str(default_models_dir())) == default_models_dir()


def test_check_config_says_it_in_one_line(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\ndevice_id: a\nsite: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"mqtt: {{enabled: false}}\nkeys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\n"
        f"state_dir: {tmp_path / 'state'}\nvision: {{models_dir: /nonexistent/models}}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", "-c", str(path)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "emotion-agent: error: vision.models_dir is '/nonexistent/models', which does not exist: set it "
        "to a models folder (one holding manifest.json and the model files it lists), or remove it to "
        "use the models installed with the agent\n"
    )


def test_check_config_with_a_coral_names_the_setting_too(tmp_path: Path) -> None:
    """The Edge TPU check runs first in check-config and read the folder its own way (found by review)."""
    from agent.vision.edgetpu import check_accelerator  # noqa: PLC0415
    from agent.vision.settings import VisionConfig  # noqa: PLC0415

    with pytest.raises(ModelError, match=r"^vision\.models_dir is '/opt/modles', which does not exist"):
        check_accelerator(VisionConfig(accelerator="coral", models_dir="/opt/modles"))
