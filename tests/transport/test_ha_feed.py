"""The feed Home Assistant and a facility see, from a real `emotion-agent run` on a real mosquitto.

- A plain recording, ``mosquitto_sub -F %j -t 'emotion-agent/#'``, made while the agent runs and
  another made afterwards (the retained messages only), verifies with exit 0.
- An agent killed with ``-9`` while an alert is raised leaves ``raised`` retained; the next
  start replaces it with the ``cleared`` it actually holds, signed, so a Home Assistant that
  (re)connects never shows a Problem the agent does not have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.crypto import Verifier, generate_keypair, load_public_key
from tests.mosquitto import ACL_PER_DEVICE, Broker, Subscriber, make_pki, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "feed-lobby"
BASE = f"emotion-agent/{DEVICE}"
USERS = {DEVICE: "feed-secret", "dashboard": "dash"}


def write_config(tmp: Path, broker: Broker, clip: Path, *, threshold: int, realtime: bool) -> Path:
    assert broker.pki is not None
    if not (tmp / "keys" / "device.key").exists():
        generate_keypair(tmp / "keys")
    (tmp / "mqtt.password").write_text(USERS[DEVICE] + "\n")
    (tmp / "mqtt.password").chmod(0o600)
    cert, key = broker.pki.clients[DEVICE]
    path = tmp / "agent.yaml"
    path.write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{clip}", fps: 5, loop: false, realtime: {str(realtime).lower()}}}
analytics:
  window_seconds: 10
  min_people: 2
  alerts:
    - {{name: crowd, metric: people, threshold: {threshold}, min_people: 2, windows_in_row: 1}}
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


def long_clip(media: Path, tmp: Path) -> Path:
    """100 s: the six-person group from 50 to 80 s, so an alert is raised at 60 s with 40 s of
    clip still to go when the agent is killed."""
    out = tmp / "long.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_sample.py"), "--out", str(out), "--seconds",
                    "100", "--media", str(media)], check=True, capture_output=True, timeout=120)
    return out


def agent(config: Path) -> list[str]:
    return [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "-c", str(config)]


def mosquitto_sub(broker: Broker, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The documented recording command, with this broker's TLS and the dashboard's login."""
    assert broker.pki is not None
    cert, key = broker.pki.clients["dashboard"]
    cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "--cafile", str(broker.pki.ca),
           "--cert", str(cert), "--key", str(key), "-u", "dashboard", "-P", USERS["dashboard"],
           "-i", f"rec-{out.stem}", "-F", "%j", "-t", "emotion-agent/#", *extra]
    with out.open("wb") as handle:
        return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.DEVNULL)


def verify(tmp: Path, recording: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent", "verify", "--pubkey", str(tmp / "keys" / "device.pub.jwk"),
           str(recording)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def retained_now(broker: Broker, topic: str) -> list[bytes]:
    assert broker.pki is not None
    with Subscriber(broker, [topic], username="dashboard", password=USERS["dashboard"],
                    cert=broker.pki.clients["dashboard"], client_id=f"late-{time.monotonic_ns()}") as sub:
        time.sleep(0.5)  # a retained message follows the SUBACK at once
        return [m.payload for m in sub.messages if m.retain]


@pytest.mark.slow
def test_a_plain_mosquitto_sub_recording_verifies_with_exit_0(tmp_path: Path, sample_clip: Path) -> None:
    pki = make_pki(tmp_path / "pki", clients=(DEVICE, "dashboard"))
    with Broker(tmp_path / "broker", pki=pki, users=USERS, acl=ACL_PER_DEVICE) as broker:
        config = write_config(tmp_path, broker, sample_clip, threshold=3, realtime=False)
        live = tmp_path / "live.jsonl"
        rec = mosquitto_sub(broker, live)
        wait_until(lambda: "Sending SUBACK to rec-live" in broker.log_text(), what="recorder subscribed")
        run = subprocess.run(agent(config), capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        wait_until(lambda: b'"payload":"offline"' in live.read_bytes(), what="offline recorded")
        rec.send_signal(signal.SIGTERM)
        rec.wait(10)
        late = tmp_path / "late.jsonl"
        mosquitto_sub(broker, late, "-W", "2").wait(20)

    lines = [json.loads(x) for x in live.read_text().splitlines()]
    topics = {x["topic"] for x in lines}
    assert {f"{BASE}/status", f"{BASE}/stats", f"{BASE}/alert", f"{BASE}/alert/crowd"} <= topics
    assert any(x["topic"] == f"{BASE}/privacy_mode" and x["payload"] is None for x in lines), (
        "the recording holds the empty retained clear of privacy_mode, as printed by mosquitto_sub"
    )
    checked = verify(tmp_path, live)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == ""
    assert "skipped 2: availability status" in checked.stderr
    assert "skipped 2: empty payload" in checked.stderr  # privacy_mode and alert/crowd cleared

    late_lines = [json.loads(x) for x in late.read_text().splitlines()]
    assert all(x["retain"] == 1 for x in late_lines)
    assert {x["topic"] for x in late_lines} >= {f"{BASE}/key", f"{BASE}/alert/crowd", f"{BASE}/status"}
    checked = verify(tmp_path, late)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "retained copy(ies) verified but not ordered" in checked.stderr


@pytest.mark.slow
def test_after_kill_9_the_next_start_clears_the_raised_alert_it_no_longer_holds(
    tmp_path: Path, sample_clip: Path, media: Path
) -> None:
    clip = long_clip(media, tmp_path)
    pki = make_pki(tmp_path / "pki", clients=(DEVICE, "dashboard"))
    state_topic = f"{BASE}/alert/crowd"
    with Broker(tmp_path / "broker", pki=pki, users=USERS, acl=ACL_PER_DEVICE) as broker:
        with Subscriber(broker, [state_topic], username="dashboard", password=USERS["dashboard"],
                        cert=pki.clients["dashboard"]) as sub:
            config = write_config(tmp_path, broker, clip, threshold=3, realtime=False)
            proc = subprocess.Popen(agent(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(
                    lambda: any(m.payload and json.loads(m.payload)["body"]["state"] == "raised"
                                for m in sub.on_topic(state_topic)),
                    timeout=120, what="the crowd alert raised",
                )
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            first, second = (m.payload for m in sub.on_topic(state_topic)[:2])
            assert first == b"", "the last run's retained state is removed at the first connect"
            assert json.loads(second)["body"] == {"rule": "crowd", "state": "cleared", "since": None}

        (stale,) = retained_now(broker, state_topic)
        assert json.loads(stale)["body"]["state"] == "raised", "what a dead agent leaves behind"

        # Restarted with a rule it cannot raise on this clip: it never sees the crowd again.
        config = write_config(tmp_path, broker, sample_clip, threshold=100, realtime=False)
        run = subprocess.run(agent(config), capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        (now,) = retained_now(broker, state_topic)

    envelope = json.loads(now)
    assert envelope["body"] == {"rule": "crowd", "state": "cleared", "since": None}
    assert envelope["typ"] == "alert-state"
    verifier = Verifier([load_public_key(tmp_path / "keys" / "device.pub.jwk")], max_skew_s=10**9)
    assert verifier.check(now, arrival_topic=state_topic).ok
