"""End to end: `emotion-agent run` replays a real clip and publishes over TLS to a real mosquitto;
an independent client receives the discovery config, the windows and an alert, and every signed
message verifies against the device's public key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.crypto import Verifier, generate_keypair, load_public_key
from tests.mosquitto import ACL_PER_DEVICE, Broker, Received, Subscriber, make_pki

DEVICE = "e2e-lobby"
BASE = f"emotion-agent/{DEVICE}"
UNSIGNED = {f"{BASE}/status"}  # plain online/offline, by design


def write_config(tmp: Path, broker: Broker, clip: Path) -> Path:
    assert broker.pki is not None
    generate_keypair(tmp / "keys")
    (tmp / "mqtt.password").write_text("e2e-secret\n")
    (tmp / "mqtt.password").chmod(0o600)
    cert, key = broker.pki.clients[DEVICE]
    path = tmp / "agent.yaml"
    path.write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{clip}", fps: 5, loop: false, realtime: false}}
analytics:
  window_seconds: 10
  min_people: 2
  alerts:
    - name: crowd
      metric: people
      threshold: 3
      min_people: 2
      windows_in_row: 1
      clear_windows: 1
mqtt:
  host: {broker.host}
  port: {broker.port}
  tls: {{ca: "{broker.pki.ca}", cert: "{cert}", key: "{key}"}}
  username: {DEVICE}
  password_file: "{tmp / 'mqtt.password'}"
  reconnect_min_seconds: 1
  reconnect_max_seconds: 2
keys: {{private_key: "{tmp / 'keys' / 'device.key'}"}}
state_dir: "{tmp / 'state'}"
""")
    return path


@pytest.mark.slow
def test_run_publishes_discovery_windows_and_an_alert_all_signed(tmp_path: Path, sample_clip: Path) -> None:
    pki = make_pki(tmp_path / "pki", clients=(DEVICE, "dashboard"))
    users = {DEVICE: "e2e-secret", "dashboard": "dash"}
    with Broker(tmp_path / "broker", pki=pki, users=users, acl=ACL_PER_DEVICE) as broker:
        config = write_config(tmp_path, broker, sample_clip)
        with Subscriber(broker, [f"{BASE}/#", "homeassistant/device/#"], username="dashboard",
                        password="dash", cert=pki.clients["dashboard"]) as sub:
            proc = subprocess.run(
                [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "-c", str(config)],
                capture_output=True, text=True, timeout=300, check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            sub.wait_for(f"{BASE}/status", 2)  # online, then the explicit offline of a clean stop
            received = list(sub.messages)
    by_topic: dict[str, list[Received]] = {}
    for m in received:
        by_topic.setdefault(m.topic, []).append(m)

    disco = json.loads(by_topic[f"homeassistant/device/emotion_agent_{DEVICE}/config"][0].payload)
    assert "alert_crowd" in disco["cmps"]
    assert [m.payload for m in by_topic[f"{BASE}/status"]] == [b"online", b"offline"]

    verifier = Verifier([load_public_key(tmp_path / "keys" / "device.pub.jwk")], max_skew_s=10**9)
    checked = 0
    for m in received:
        if not m.topic.startswith(BASE + "/") or m.topic in UNSIGNED or m.payload == b"":
            continue
        result = verifier.check(m.payload, arrival_topic=m.topic)
        assert result.ok, f"{m.topic}: {result.reason}"
        checked += 1
    windows = [json.loads(m.payload)["body"] for m in by_topic[f"{BASE}/stats"]]
    alerts = [json.loads(m.payload)["body"] for m in by_topic[f"{BASE}/alert"]]
    assert len(windows) >= 2
    assert max(w["people"] or 0 for w in windows) >= 4
    assert any(a["rule"] == "crowd" and a["state"] == "raised" for a in alerts)
    assert checked >= len(windows) + len(alerts) + 1  # plus health, key, checkpoint
    assert f"{BASE}/audit/checkpoint" in by_topic
