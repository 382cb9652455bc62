"""`run` loads no module it does not use: pydantic's plugin discovery (importlib.metadata and
what it pulls in) never, paho and ssl only when MQTT is on (docs/vision.md, "Peak RSS")."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
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


def run_child(code: str, *, env: dict[str, str] | None = None) -> list[str]:
    """Run ``code`` in a fresh interpreter; its last line of output, parsed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


MQTT_PATH = (
    "import json, sys\n"
    "from agent.lean_imports import skip_pydantic_plugins\n"
    "skip_pydantic_plugins()\n"
    "import agent.transport.mqtt\n"
    "import paho.mqtt.client as client\n"
)


def test_with_mqtt_on_paho_comes_without_urllib_request_http_or_email() -> None:
    """What ``run`` imports for MQTT; and paho's connect still finds no proxy without them."""
    loaded = run_child(
        MQTT_PATH
        + "proxy = client.Client(client.CallbackAPIVersion.VERSION2)._get_proxy()\n"
        "wanted = ('urllib.request', 'http.client', 'email', 'tempfile')\n"
        "print(json.dumps([m for m in wanted if m in sys.modules] + [repr(proxy), client.socks is None]))\n"
    )
    assert loaded == ["None", True]


def test_urllib_request_imported_later_is_the_real_module_and_paho_sees_it() -> None:
    seen = run_child(
        MQTT_PATH
        + "import urllib.request\n"
        "print(json.dumps([client.urllib.request is sys.modules['urllib.request'],\n"
        "                  callable(client.urllib.request.getproxies)]))\n"
    )
    assert seen == [True, True]


def test_with_pysocks_installed_paho_has_urllib_request_and_finds_the_proxy(tmp_path: Path) -> None:
    """PySocks present (a stand-in with what paho reads of it): paho is imported as it is and
    takes the proxy from ``mqtt_proxy`` through ``urllib.request``, as without the agent."""
    (tmp_path / "socks.py").write_text(
        "HTTP, SOCKS4, SOCKS5 = 3, 1, 2\n"
        "def get_default_proxy():\n    return None\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        "mqtt_proxy": "socks://proxy.example:1080",
    }
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    proxy = run_child(
        MQTT_PATH
        + "proxy = client.Client(client.CallbackAPIVersion.VERSION2)._get_proxy()\n"
        "print(json.dumps(['urllib.request' in sys.modules, sorted(proxy.items())]))\n",
        env=env,
    )
    assert proxy == [True, [["proxy_addr", "proxy.example"], ["proxy_port", 1080], ["proxy_type", 2]]]


def test_paho_reads_urllib_request_only_in_its_proxy_lookup_after_the_pysocks_check() -> None:
    """The condition ``import_paho_client`` relies on, checked on the paho installed: every use
    of ``urllib.request`` in paho's client is in ``Client._get_proxy``, whose first statement
    returns when PySocks is missing (``socks is None``)."""
    spec = importlib.util.find_spec("paho.mqtt.client")
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    users: set[str] = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Attribute) and node.attr == "request"
                    and isinstance(node.value, ast.Name) and node.value.id == "urllib"
                ):
                    users.add(function.name)
    at_top = [
        node for node in tree.body
        if isinstance(node, ast.Expr | ast.Assign | ast.AugAssign) and "urllib.request" in ast.unparse(node)
    ]
    assert users == {"_get_proxy"}
    assert at_top == []
    get_proxy = next(
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "_get_proxy"
    )
    first = get_proxy.body[0]
    assert isinstance(first, ast.If)
    assert ast.unparse(first.test) == "socks is None"
    assert [ast.unparse(s) for s in first.body] == ["return None"]
