"""docs/key-rotation.md's operator procedure, run line by line on a running agent.

The code block under "On the device" is read from the page and each line is run in order: the
`systemctl` lines become SIGTERM to, and a new start of, `emotion-agent run` (as systemd does),
the `emotion-agent` line runs as written with the test's config path for
/etc/emotion-agent/agent.yaml. That line must name the program as tools/install lays it down (the
unit's ExecStart= program): a plain `sudo emotion-agent` is "command not found" on the device,
whose venv is on no PATH sudo uses. The config names its key as a bare `device.key`, as provisioned
configs do, so the command's default key path (beside the config) is the one exercised. A line
the test does not know fails it, so the page and the test cannot drift apart.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.crypto import generate_keypair, kid_for, load_private_key

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "key-rotation.md"
ETC_CONFIG = "/etc/emotion-agent/agent.yaml"
UNIT = ROOT / "systemd" / "emotion-agent.service"


def installed_program() -> str:
    """The agent's program on a device, as the unit starts it (ExecStart='s first word)."""
    line = next(x for x in UNIT.read_text(encoding="utf-8").splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()[0]


def procedure() -> list[str]:
    section = DOC.read_text(encoding="utf-8").split("## On the device", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "no sh block under 'On the device'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def published(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [json.loads(line)["payload"] for line in out.read_text().splitlines() if line.endswith("}")]


def wait_for_key_message(out: Path, kid: str, proc: subprocess.Popen[str]) -> None:
    """The service is up once it has published its `key` message signed by ``kid``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(e["typ"] == "key" and e["kid"] == kid for e in published(out)):
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no key message signed by {kid}")


class Systemd:
    """`systemctl start|stop emotion-agent` for a service that is `emotion-agent run -c CONFIG`."""

    def __init__(self, folder: Path, config: Path) -> None:
        self.folder, self.config = folder, config
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "-c", str(self.config)],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        key = load_private_key(self.folder / "device.key")
        wait_for_key_message(self.folder / "out.jsonl", kid_for(key.public_key()), self.proc)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-3000:]
        self.proc = None


def test_the_documented_rotation_names_the_installed_program() -> None:
    """On a device the agent is /opt/emotion-agent/venv/bin/emotion-agent, on no PATH of sudo."""
    commands = [line.split()[1] for line in procedure() if line.split()[1] != "systemctl"]
    assert commands == [installed_program()], procedure()


@pytest.mark.slow
def test_the_documented_procedure_rotates_a_running_agents_key(tmp_path: Path, sample_clip: Path) -> None:
    generate_keypair(tmp_path / "keygen")
    (tmp_path / "keygen/device.key").rename(tmp_path / "device.key")
    (tmp_path / "keygen/device.pub.jwk").rename(tmp_path / "old.pub.jwk")
    old_kid = kid_for(load_private_key(tmp_path / "device.key").public_key())
    config = tmp_path / "agent.yaml"
    config.write_text(f"""schema_version: 1
device_id: doc-1
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{sample_clip}", fps: 5, loop: true, realtime: true}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "{tmp_path / 'out.jsonl'}"}}
keys: {{private_key: device.key}}
state_dir: "{tmp_path / 'state'}"
""")
    systemd = Systemd(tmp_path, config)
    systemd.start()  # installed and running, as the procedure assumes
    try:
        for line in procedure():
            words = line.split()
            if words == ["sudo", "systemctl", "stop", "emotion-agent"]:
                systemd.stop()
            elif words == ["sudo", "systemctl", "start", "emotion-agent"]:
                systemd.start()
            elif words[:2] == ["sudo", installed_program()]:
                args = [str(config) if w == ETC_CONFIG else w for w in words[2:]]
                proc = subprocess.run([sys.executable, "-m", "agent", *args], cwd=tmp_path,
                                      capture_output=True, text=True, timeout=120, check=False)
                assert proc.returncode == 0, proc.stderr
            else:
                raise AssertionError(f"docs/key-rotation.md: a line this test cannot run: {line!r}")
    finally:
        if systemd.proc is not None:
            systemd.stop()
    new_kid = kid_for(load_private_key(tmp_path / "device.key").public_key())
    assert new_kid != old_kid
    kids = [e["kid"] for e in published(tmp_path / "out.jsonl")]
    assert kids[0] == old_kid
    assert kids[-1] == new_kid
    verify = subprocess.run([sys.executable, "-m", "agent", "verify", "--pubkey", "old.pub.jwk", "out.jsonl"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "is now trusted for device doc-1" in verify.stdout
