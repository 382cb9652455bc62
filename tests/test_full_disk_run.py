"""`emotion-agent run` with state_dir on a small tmpfs that fills up mid-run, publishing to a
real mosquitto (issue 18 item 1). Before: the spool error was swallowed, the audit log recorded
`publish` for windows that never arrived, and the audit state file and `_stop` raised raw
OSError tracebacks. After: windows wait in memory while the disk is full, every window arrives
once, the audit log records `publish` only for what was spooled, says that entries and messages
were delayed, and the agent keeps running to a clean stop.

The tmpfs is mounted in a private mount namespace (`unshare --mount`, with `--map-root-user`
when not root), so the test needs no cleanup of a host mount.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.audit.entries import decode_entry
from agent.audit.verify import verify_log
from agent.crypto import generate_keypair, load_public_key
from tests.mosquitto import Broker, Subscriber

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "disk-1"
BASE = f"emotion-agent/{DEVICE}"

DRIVER = r"""
import json, os, shutil, subprocess, sys, time
state, out, config = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", state], check=True)
log_path = os.path.join(out, "agent.log")
log = open(log_path, "w")
agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", config],
                         stdout=subprocess.DEVNULL, stderr=log)

def seen(text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as f:
            if text in f.read():
                return True
        if agent.poll() is not None:
            return False
        time.sleep(0.1)
    return False

started = seen("agent started", 120)
filler = os.path.join(state, "filler")
with open(filler, "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"\0" * 65536)
    except OSError:
        pass
full = seen("in memory", 60)
time.sleep(2)
os.unlink(filler)
rc = agent.wait(300)
shutil.copytree(os.path.join(state, "audit"), os.path.join(out, "audit"))
subprocess.run(["umount", state], check=False)
print(json.dumps({"rc": rc, "started": started, "full": full}))
"""


def write_config(tmp: Path, broker: Broker, clip: Path) -> Path:
    generate_keypair(tmp / "keys")
    path = tmp / "agent.yaml"
    path.write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{clip}", fps: 5, loop: false, realtime: true}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_min_seconds: 1, reconnect_max_seconds: 1}}
keys: {{private_key: "{tmp / 'keys' / 'device.key'}"}}
state_dir: "{tmp / 'state'}"
""")
    return path


def namespaced(argv: list[str]) -> list[str]:
    as_root = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user"]
    return [*as_root, *argv]


@pytest.mark.slow
def test_a_full_disk_mid_run_loses_no_window_and_the_audit_log_tells_the_truth(
    tmp_path: Path, sample_clip: Path
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "out").mkdir()
    broker = Broker(tmp_path / "broker", allow_anonymous=True)
    with broker, Subscriber(broker, [f"{BASE}/#"]) as sub:
        config = write_config(tmp_path, broker, sample_clip)
        driver = [sys.executable, "-c", DRIVER, str(tmp_path / "state"), str(tmp_path / "out"), str(config)]
        proc = subprocess.run(
            namespaced(driver),
            capture_output=True, text=True, timeout=400, check=False, cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        sub.wait_for(f"{BASE}/status", 2)  # online, then the offline of a clean stop
        received = list(sub.messages)
    log = (tmp_path / "out" / "agent.log").read_text()
    assert outcome == {"rc": 0, "started": True, "full": True}, log[-3000:]
    assert "Traceback" not in log
    stats = [json.loads(m.payload) for m in received if m.topic == f"{BASE}/stats"]
    spans = [(s["body"]["window_start"], s["body"]["window_end"]) for s in stats]
    assert len(spans) >= 2, spans
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans  # every window, once
    audit = tmp_path / "out" / "audit"
    assert verify_log(audit, load_public_key(tmp_path / "keys" / "device.pub.jwk")).problems == []
    entries = [decode_entry(line) for p in sorted(audit.glob("segment-*.jsonl"))
               for line in p.read_bytes().splitlines()]
    published = {(e.data["topic"], e.data["seq"]) for e in entries if e.kind == "publish"}
    arrived = {(m.topic, json.loads(m.payload)["seq"]) for m in received if _signed(m.payload)}
    assert published <= arrived, "the audit log says published but the broker never saw it"
    assert {(f"{BASE}/stats", s["seq"]) for s in stats} <= published
    codes = {e.data.get("code") for e in entries if e.kind == "error"}
    assert codes & {"audit_delayed", "publish_delayed"}, codes
    assert any(e.kind == "stop" for e in entries), "the stop entry must be written"
    health = [json.loads(m.payload)["body"] for m in received if m.topic == f"{BASE}/health"]
    assert any(h.get("held_messages", 0) > 0 or h.get("storage_error") for h in health), health


def _signed(payload: bytes) -> dict[str, Any] | None:
    try:
        env = json.loads(payload)
    except ValueError:
        return None
    return env if isinstance(env, dict) and "seq" in env else None
