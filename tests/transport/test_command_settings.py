"""check-config warns when commands are obeyed on an unauthenticated broker connection, and
reads the operator key as run would (issue 18 item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.crypto import generate_keypair
from agent.transport.settings import MqttConfig, TlsConfig

HEAD = (
    "schema_version: 1\ndevice_id: lobby-1\n"
    "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
)


def check(tmp_path: Path, mqtt: str) -> subprocess.CompletedProcess[str]:
    keys = tmp_path / "keys"
    if not keys.exists():
        generate_keypair(keys)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        HEAD + f"keys: {{private_key: {keys / 'device.key'}}}\nstate_dir: {tmp_path / 'state'}\n" + mqtt
    )
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(cfg)],
        capture_output=True, text=True, check=False,
    )


def test_check_config_warns_when_anyone_on_the_broker_could_send_commands(tmp_path: Path) -> None:
    proc = check(tmp_path, "mqtt: {host: 127.0.0.1, port: 1883}\n")
    assert proc.returncode == 0, proc.stderr
    assert "warning: mqtt.commands: commands are obeyed but the broker connection has neither" in proc.stdout
    quiet = check(tmp_path, "mqtt: {host: 127.0.0.1, port: 1883, commands: {enabled: false}}\n")
    assert "warning" not in quiet.stdout


def test_authentication_silences_the_warning() -> None:
    with_password = MqttConfig(host="127.0.0.1", username="u", password_file=Path("/x"))
    with_cert = MqttConfig(tls=TlsConfig(ca=Path("/ca"), cert=Path("/c"), key=Path("/k")))
    server_only = MqttConfig(tls=TlsConfig(ca=Path("/ca")))
    assert with_password.warnings() == []
    assert with_cert.warnings() == []
    assert len(server_only.warnings()) == 1  # TLS without a client certificate authenticates no one


def test_an_operator_key_that_is_not_a_key_is_exit_2_naming_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "operator.jwk"
    bad.write_text("not a key\n")
    proc = check(tmp_path, f"mqtt: {{host: 127.0.0.1, port: 1883, commands: {{operator_key: {bad}}}}}\n")
    assert proc.returncode == 2
    assert "mqtt.commands.operator_key" in proc.stderr
    assert "Traceback" not in proc.stderr
