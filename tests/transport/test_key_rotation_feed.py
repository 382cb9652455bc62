"""A key rotated between two runs on a real mosquitto (issue 14 item 4): the notice the command
spooled, signed by the old key, leaves at the next start although the service now holds the
new key (the spool's row check follows the rotation the audit log records); a live recording
of the whole feed verifies with the old public key alone, so does a later recording of the
retained messages only (the notice comes after the new key's `key` message there), and the
fleet registry that was given only the old key stores every signed message of it."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.fleet.registry import Accepted, Registry
from agent.fleet.store import Store
from tests.mosquitto import ACL_PER_DEVICE, Broker, make_pki, wait_until
from tests.transport.test_ha_feed import BASE, DEVICE, USERS, agent, mosquitto_sub, write_config


@pytest.mark.slow
def test_a_feed_across_a_rotation_verifies_with_the_old_key(tmp_path: Path, sample_clip: Path) -> None:
    pki = make_pki(tmp_path / "pki", clients=(DEVICE, "dashboard"))
    with Broker(tmp_path / "broker", pki=pki, users=USERS, acl=ACL_PER_DEVICE) as broker:
        config = write_config(tmp_path, broker, sample_clip, threshold=100, realtime=False)
        shutil.copy(tmp_path / "keys/device.pub.jwk", tmp_path / "old.jwk")
        live = tmp_path / "live.jsonl"
        rec = mosquitto_sub(broker, live)
        wait_until(lambda: "Sending SUBACK to rec-live" in broker.log_text(), what="recorder subscribed")
        for step in (agent(config), [sys.executable, "-m", "agent", "keys", "rotate", "-c", str(config)],
                     agent(config)):
            done = subprocess.run(step, capture_output=True, text=True, timeout=300, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
        wait_until(lambda: live.read_bytes().count(b'"payload":"offline"') == 2, what="second run recorded")
        rec.send_signal(signal.SIGTERM)
        rec.wait(10)
        late = tmp_path / "late.jsonl"
        mosquitto_sub(broker, late, "-W", "2").wait(20)

    with sqlite3.connect(tmp_path / "state/spool.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 0
    lines = [json.loads(x) for x in live.read_text().splitlines()]
    notices = [x for x in lines if x["topic"] == f"{BASE}/key-rotation"]
    assert len(notices) == 1
    checked = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "--pubkey", "old.jwk", "live.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is now trusted for device" in checked.stdout

    # A subscriber that comes later gets the retained messages only, in the broker's topic
    # order: the new key's `key` message before the notice that vouches for it.
    late_topics = [json.loads(x)["topic"] for x in late.read_text().splitlines()]
    assert late_topics.index(f"{BASE}/key") < late_topics.index(f"{BASE}/key-rotation")
    late_check = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "--pubkey", "old.jwk", "late.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert late_check.returncode == 0, late_check.stdout + late_check.stderr

    (tmp_path / "fleet-keys").mkdir()
    shutil.copy(tmp_path / "old.jwk", tmp_path / f"fleet-keys/{DEVICE}.jwk")
    registry = Registry(Store(f"sqlite:///{tmp_path / 'fleet.db'}"), trust_first_seen=False, max_skew_s=300)
    registry.provision(tmp_path / "fleet-keys", 0)
    signed = [x for x in lines if isinstance(x["payload"], str) and x["payload"].startswith("{")]
    verdicts = [
        registry.check(x["payload"].encode(), x["topic"], json.loads(x["payload"])["ts"]) for x in signed
    ]
    refused = [v for v in verdicts if not isinstance(v, Accepted)]
    assert refused == []
    assert len({json.loads(x["payload"])["kid"] for x in signed}) == 2
