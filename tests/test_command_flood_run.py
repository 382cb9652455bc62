"""`emotion-agent run` on a real mosquitto under a flood of commands (issue 18 item 5). Before:
200 checkpoint presses in 10 s made 200 signed checkpoints and grew the audit log without
bound; 200 privacy toggles made 200 retained messages and audit entries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.audit.entries import decode_entry
from agent.audit.note import split_notes
from agent.crypto import generate_keypair
from tests.mosquitto import Broker, Subscriber, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "flood-1"
BASE = f"emotion-agent/{DEVICE}"


@pytest.mark.slow
def test_200_presses_and_200_toggles_make_a_handful_of_entries_and_the_last_state_wins(
    tmp_path: Path, sample_clip: Path
) -> None:
    generate_keypair(tmp_path / "keys")
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        config = tmp_path / "agent.yaml"
        config.write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{sample_clip}", fps: 5, loop: true, realtime: true}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_min_seconds: 1, reconnect_max_seconds: 1}}
keys: {{private_key: "{tmp_path / 'keys' / 'device.key'}"}}
state_dir: "{tmp_path / 'state'}"
""")
        with Subscriber(broker, [f"{BASE}/#"], client_id="flooder") as sub:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "-c", str(config)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            try:
                wait_until(lambda: bool(sub.on_topic(f"{BASE}/key")), timeout=120, what="agent started")
                time.sleep(1)
                for i in range(200):
                    sub.client.publish(f"{BASE}/cmd/checkpoint", b"PRESS", qos=0)
                    word = b"ON" if i % 2 == 0 else b"OFF"
                    sub.client.publish(f"{BASE}/cmd/privacy_mode/set", word, qos=0)
                    time.sleep(0.05)  # 200 of each in 10 s
                time.sleep(4)
                agent.send_signal(signal.SIGTERM)
                _, err = agent.communicate(timeout=60)
            finally:
                if agent.poll() is None:
                    agent.kill()
            states = [json.loads(m.payload)["body"]["state"] for m in sub.on_topic(f"{BASE}/privacy_mode")
                      if m.payload]
    assert agent.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    audit = tmp_path / "state" / "audit"
    entries = [decode_entry(line) for p in sorted(audit.glob("segment-*.jsonl"))
               for line in p.read_bytes().splitlines()]
    modes = [e.data["mode"] for e in entries if e.kind == "privacy_mode"]
    assert 1 <= len(modes) <= 8, modes  # at most one change every 2 s over about 10 s
    assert modes[-1] == "off"  # the last command asked for OFF
    assert states[-1] == "OFF"
    assert len(states) <= 10, states
    notes, _ = split_notes((audit / "checkpoints.log").read_bytes())
    assert len(notes) <= 8, f"{len(notes)} checkpoints for 200 presses"
    assert len(entries) < 150, f"{len(entries)} audit entries"
