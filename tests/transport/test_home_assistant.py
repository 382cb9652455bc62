"""A real Home Assistant Core discovers the agent and shows what it publishes.

Home Assistant Core 2024.3.3 (``make ha-venv``: the newest on Python 3.11, so without device-based
discovery) runs from ``.venv-ha`` with its MQTT integration on a real mosquitto, and its
``mqtt_statestream`` integration republishes every entity state it holds under ``hastate/``:
that is what its dashboard would show. The agent runs ``mqtt.discovery.mode: entities`` on the
sample clip; afterwards an agent killed with ``-9`` while an alert is raised is restarted, and
Home Assistant must go from the Problem to unknown and off, never back to on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.crypto import generate_keypair
from tests.mosquitto import Broker, Subscriber, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
HASS = Path(os.environ.get("HA_PYTHON", ROOT / ".venv-ha" / "bin" / "python")).with_name("hass")
DEVICE = "lobby-1"
ENTITY = "emotion_agent_lobby_1"
ALERT = f"hastate/binary_sensor/{ENTITY}_alert_crowd/state"
PEOPLE = f"hastate/sensor/{ENTITY}_people_per_window/state"


def ha_config(folder: Path, port: int) -> Path:
    """A minimal Home Assistant configuration with the MQTT integration on ``port``."""
    (folder / ".storage").mkdir(parents=True)
    (folder / "configuration.yaml").write_text(f"""\
homeassistant:
  name: test
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
  currency: EUR
  country: FR
http:
  server_host: 127.0.0.1
  server_port: {free_port()}
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
mqtt_statestream:
  base_topic: hastate
""")
    entry = {"entry_id": "0123456789abcdef0123456789abcdef", "version": 1, "minor_version": 1,
             "domain": "mqtt", "title": "127.0.0.1",
             "data": {"broker": "127.0.0.1", "port": port, "discovery": True}, "options": {},
             "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user",
             "unique_id": None, "disabled_by": None}
    (folder / ".storage" / "core.config_entries").write_text(json.dumps(
        {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}))
    return folder


def agent_config(tmp: Path, port: int, clip: Path, threshold: int, realtime: bool = False) -> Path:
    if not (tmp / "keys" / "device.key").exists():
        generate_keypair(tmp / "keys")
    path = tmp / f"agent-{threshold}.yaml"
    path.write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{clip}", fps: 5, loop: false, realtime: {str(realtime).lower()}}}
analytics:
  window_seconds: 10
  min_people: 2
  alerts:
    - {{name: crowd, metric: people, threshold: {threshold}, min_people: 2, windows_in_row: 1}}
mqtt: {{host: 127.0.0.1, port: {port}, discovery: {{mode: entities}}}}
keys: {{private_key: "{tmp / 'keys' / 'device.key'}"}}
state_dir: "{tmp / 'state'}"
""")
    return path


def agent(config: Path) -> list[str]:
    return [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "-c", str(config)]


@pytest.fixture
def home_assistant(tmp_path: Path) -> Iterator[tuple[Broker, Subscriber, Path]]:
    assert HASS.exists(), f"{HASS} is missing: run `make ha-venv` (make test does)"
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        config = ha_config(tmp_path / "ha", broker.port)
        log = tmp_path / "ha.log"
        with log.open("wb") as out, Subscriber(broker, ["hastate/#"]) as states:
            hass = subprocess.Popen([str(HASS), "-c", str(config), "--skip-pip"], stdout=out,
                                    stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: "homeassistant/+/+/+/config" in broker.log_text(), timeout=120,
                           what="Home Assistant subscribed to discovery")
                yield broker, states, log
            finally:
                hass.send_signal(signal.SIGTERM)
                try:
                    hass.wait(60)
                except subprocess.TimeoutExpired:
                    hass.kill()
                    hass.wait(10)


def seen(states: Subscriber, topic: str) -> list[str]:
    return [m.payload.decode() for m in states.on_topic(topic)]


@pytest.mark.slow
def test_home_assistant_shows_every_entity_the_windows_and_a_cleared_stale_alert(
    home_assistant: tuple[Broker, Subscriber, Path], tmp_path: Path, sample_clip: Path, media: Path
) -> None:
    broker, states, log = home_assistant
    # In real time: Home Assistant sets its entities up while the first windows are still to come.
    run = subprocess.run(agent(agent_config(tmp_path, broker.port, sample_clip, 3, realtime=True)),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    wait_until(lambda: seen(states, ALERT)[-1:] == ["unavailable"], timeout=30, what="clean stop seen")

    entities = {m.topic for m in states.messages if m.topic.startswith("hastate/")}
    assert len(entities) == 17 + 1, sorted(entities)  # one per alert rule
    assert "on" in seen(states, ALERT), "the crowd alert was raised on the sample clip"
    people = [int(v) for v in seen(states, PEOPLE) if v.isdigit()]
    assert max(people, default=0) >= 4, seen(states, PEOPLE)
    assert "unknown" in seen(states, PEOPLE), "a suppressed window shows unknown, not 0"
    text = log.read_text(errors="replace")
    assert text.count("Found new component") == 17 + 1
    problems = [line for line in text.splitlines() if ("WARNING" in line or "ERROR" in line)
                and "components.mqtt" in line and "Integration device is not supported" not in line]
    assert problems == []

    # Killed with -9 while raised (a 100 s clip: the crowd from 50 to 80 s), then restarted
    # with a rule this clip never raises.
    clip = tmp_path / "long.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_sample.py"), "--out", str(clip), "--seconds",
                    "100", "--media", str(media)], check=True, capture_output=True, timeout=120)
    before = len(seen(states, ALERT))
    proc = subprocess.Popen(agent(agent_config(tmp_path, broker.port, clip, 3)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "on" in seen(states, ALERT)[before:], timeout=120, what="Problem shown")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    wait_until(lambda: seen(states, ALERT)[-1] == "unavailable", timeout=60, what="the will")
    after_kill = len(seen(states, ALERT))
    run = subprocess.run(agent(agent_config(tmp_path, broker.port, sample_clip, 100)), capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    wait_until(lambda: seen(states, ALERT)[-1] == "unavailable", timeout=30, what="clean stop seen")
    restarted = seen(states, ALERT)[after_kill:]
    assert "on" not in restarted, restarted
    assert restarted[:2] == ["unknown", "off"], restarted
