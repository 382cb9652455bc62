"""`run` loads no module it does not use: pydantic's plugin discovery (importlib.metadata and
what it pulls in) never, paho and ssl only when MQTT is on (docs/vision.md, "Peak RSS")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.crypto import generate_keypair
from agent.lean_imports import PYDANTIC_PLUGIN_LOADER, skip_pydantic_plugins

CLI = "import sys\nfrom agent.cli import main\nsys.exit(main(sys.argv[1:]))\n"
PROBE = (
    "import json, sys\n"
    "from agent.cli import main\n"
    "code = main(['check-config', '-c', sys.argv[1]])\n"
    "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('paho', 'ssl', 'email')\n"
    "                or m in ('importlib.metadata', 'zipfile'))\n"
    "print(json.dumps({'code': code, 'loaded': loaded}))\n"
)


def config(tmp_path: Path, mqtt: str) -> Path:
    generate_keypair(tmp_path / "keys")
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\ndevice_id: lobby-1\n"
        "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"keys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"mqtt: {mqtt}\n"
    )
    return path


def loaded_by_check_config(path: Path) -> list[str]:
    """What ``check-config`` (the config load and the file checks ``run`` makes first) imported."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, out.stderr
    return list(result["loaded"])


def test_with_mqtt_off_the_config_and_file_checks_load_no_mqtt_tls_or_plugin_discovery(
    tmp_path: Path,
) -> None:
    assert loaded_by_check_config(config(tmp_path, "{enabled: false}")) == []


def test_with_mqtt_on_the_password_file_is_still_checked(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("")
    secret.chmod(0o600)
    path = config(tmp_path, f"{{enabled: true, host: localhost, username: agent, password_file: {secret}}}")
    out = subprocess.run(
        [sys.executable, "-c", CLI, "check-config", "-c", str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "mqtt.password_file" in out.stderr
    assert "empty" in out.stderr


def test_the_stand_in_loader_finds_no_plugin_and_models_still_validate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, PYDANTIC_PLUGIN_LOADER, raising=False)
    assert skip_pydantic_plugins() is True
    assert list(sys.modules[PYDANTIC_PLUGIN_LOADER].get_plugins()) == []

    class Probe(BaseModel):
        n: int

    assert Probe.model_validate({"n": "3"}).n == 3
    assert skip_pydantic_plugins() is False  # already in place: left alone


def test_run_reaches_the_c_library_without_a_child_process_or_subprocess() -> None:
    """``run``'s own modules, and the two calls it makes into libc before the camera opens."""
    code = (
        "import sys\n"
        "from agent.lean_imports import skip_pydantic_plugins\n"
        "skip_pydantic_plugins()\n"
        "import agent.commands.run, agent.service, agent.vision.pipeline\n"
        "from agent.privacy.coredump import forbid_core_dumps\n"
        "from agent.privacy.heap import unmap_freed_frames\n"
        "forbid_core_dumps()\n"
        "assert unmap_freed_frames() is True\n"
        "print(sorted(m for m in ('ctypes.util', 'subprocess', 'tempfile') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
