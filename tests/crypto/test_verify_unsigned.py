"""verify on a feed as recorded: unsigned-by-design lines are skipped, retained copies not ordered.

Lines are in the shape ``mosquitto_sub -F %j`` prints (mosquitto 2.0.11): payload as text, an
empty payload as ``null``, ``retain`` 0 or 1. A real recording is verified in
``tests/transport/test_ha_feed.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key

BASE = "emotion-agent/lobby-1"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys"


def line(topic: str, payload: Any, retain: int = 0) -> str:
    text = payload if payload is None or isinstance(payload, str) else encode(payload).decode()
    return json.dumps({"tst": "2026-12-05T09:14:31.177996Z+0000", "topic": topic, "qos": 0,
                       "retain": retain, "payloadlen": len(text or ""), "payload": text})


def run(
    keys: Path, tmp_path: Path, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    path = tmp_path / "recording.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code = main(["verify", "--pubkey", str(keys / "device.pub.jwk"), "--max-skew", "1000000000", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_cleared_retained_and_commands_are_skipped_and_the_feed_passes(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = Signer("lobby-1", load_private_key(keys / "device.key"), store=MemorySequenceStore())
    lines = [
        line(f"{BASE}/status", "online"),
        line(f"{BASE}/privacy_mode", None),  # the agent's clear of the last run's state
        line(f"{BASE}/privacy_mode", signer.sign("privacy-mode", f"{BASE}/privacy_mode", {"state": "OFF"})),
        line(f"{BASE}/cmd/privacy_mode/set", "ON"),
        line(f"{BASE}/stats", signer.sign("stats", f"{BASE}/stats", {"people": 5})),
        line(f"{BASE}/status", "offline"),
    ]
    code, out, err = run(keys, tmp_path, lines, capsys)
    assert (code, out) == (0, "")
    assert "6 message(s): 2 ok, 0 rejected, 0 malformed, 4 skipped; 0 gap(s)" in err
    assert "skipped 2: availability status (unsigned by design" in err
    assert "skipped 1: empty payload: a retained message being cleared (unsigned by design)" in err
    assert "skipped 1: a command to the device, not a message from it (unsigned by design)" in err


def test_a_status_that_is_not_online_or_offline_is_still_malformed(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(keys, tmp_path, [line(f"{BASE}/status", "hacked")], capsys)
    assert code == 2
    assert out.startswith("line 1: malformed:")


def test_an_unsigned_stats_message_is_still_rejected(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(keys, tmp_path, [line(f"{BASE}/stats", '{"people": 99}')], capsys)
    assert code == 1
    assert out.startswith("line 1: rejected: missing field(s)")


def test_retained_copies_in_topic_order_are_verified_but_not_ordered(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At subscription the broker replays retained messages by topic: key (seq 1) after
    checkpoint (seq 3). That is no replay; a forged retained copy still fails."""
    signer = Signer("lobby-1", load_private_key(keys / "device.key"), store=MemorySequenceStore())
    key = signer.sign("key", f"{BASE}/key", {"jwk": {}})
    alert = signer.sign("alert-state", f"{BASE}/alert/crowd", {"rule": "crowd", "state": "cleared"})
    checkpoint = signer.sign("audit-checkpoint", f"{BASE}/audit/checkpoint", {"note": "x"})
    live = signer.sign("stats", f"{BASE}/stats", {"people": 5})
    lines = [line(f"{BASE}/audit/checkpoint", checkpoint, 1), line(f"{BASE}/alert/crowd", alert, 1),
             line(f"{BASE}/key", key, 1), line(f"{BASE}/status", "online", 1), line(f"{BASE}/stats", live)]
    code, out, err = run(keys, tmp_path, lines, capsys)
    assert (code, out) == (0, "")
    assert "3 retained copy(ies) verified but not ordered" in err

    forged = dict(alert, body={"rule": "crowd", "state": "raised"})
    code, out, _ = run(keys, tmp_path, [line(f"{BASE}/alert/crowd", forged, 1)], capsys)
    assert code == 1
    assert "signature does not verify" in out


def test_live_messages_out_of_order_are_still_rejected(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = Signer("lobby-1", load_private_key(keys / "device.key"), store=MemorySequenceStore())
    one, two = (signer.sign("stats", f"{BASE}/stats", {"n": i}) for i in range(2))
    code, out, _ = run(keys, tmp_path, [line(f"{BASE}/stats", two), line(f"{BASE}/stats", one)], capsys)
    assert code == 1
    assert "out of order" in out
