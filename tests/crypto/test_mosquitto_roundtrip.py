"""End to end over a real mosquitto: signed payloads published with mosquitto_pub, received with
``mosquitto_sub -F %j`` (the receiver line format the doc gives), checked by ``emotion-agent verify``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key
from tests.mosquitto import free_port

BASE = "emotion-agent/lobby-1"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("mosquitto did not start")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _pub(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-s"]
    subprocess.run([*args, "-r"] if retain else args, input=payload, check=True, timeout=10)


@pytest.mark.slow
def test_messages_received_by_mosquitto_sub_verify_and_a_moved_one_is_caught(
    broker: int, tmp_path: Path
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    key = load_private_key(tmp_path / "keys" / "device.key")
    signer = Signer("lobby-1", key, store=MemorySequenceStore())
    _pub(broker, "sync/ready", b"ready", retain=True)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker), "-t", "sync/ready", "-t", f"{BASE}/#",
         "-F", "%j", "-C", "5", "-W", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    assert sub.stdout is not None
    assert json.loads(sub.stdout.readline())["topic"] == "sync/ready"  # subscribed now
    big = {"people": 9, "max": 2**53 - 1, "text": "é \" \\ \u2028"}
    for topic, typ in (("stats", "stats"), ("alert", "alert"), ("health", "health")):
        _pub(broker, f"{BASE}/{topic}", encode(signer.sign(typ, f"{BASE}/{topic}", big)))
    _pub(broker, f"{BASE}/alert", encode(signer.sign("stats", f"{BASE}/stats", big)))
    received, _ = sub.communicate(timeout=30)
    run = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "--pubkey", str(tmp_path / "keys" / "device.pub.jwk")],
        input=received, capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout == (
        "line 4: rejected [dev lobby-1 boot 1 seq 4]: signed for topic "
        f"'{BASE}/stats' but arrived on '{BASE}/alert'\n"
    )
    assert "4 message(s): 3 ok, 1 rejected, 0 malformed; 0 gap(s)" in run.stderr
    assert "topic binding not checked" not in run.stderr
