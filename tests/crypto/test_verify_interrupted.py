"""`mosquitto_sub ... -F %j | emotion-agent verify --state FILE`, stopped with Ctrl-C.

Ctrl-C reaches every process of the pipeline, so verify is interrupted while it waits for the
next line. That is the only way to end the live check docs/signed-messages.md shows; what was
read must still count: the state file must learn it (or the next run accepts those messages
replayed) and the summary must be printed. Before, the interrupt ended the command with exit 1,
no summary, and the state file was never written.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key

TOPIC = "emotion-agent/lobby-1/stats"


def _interrupted_stdin(monkeypatch: pytest.MonkeyPatch, lines: list[bytes]) -> None:
    def feed() -> Iterator[bytes]:
        yield from lines
        raise KeyboardInterrupt  # Ctrl-C while waiting for the next message

    fed = feed()

    def readline(_size: int = -1) -> bytes:  # stdin's binary buffer, as verify reads it
        return next(fed, b"")

    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=types.SimpleNamespace(readline=readline)))


def test_ctrl_c_keeps_the_state_and_prints_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    signer = Signer("lobby-1", load_private_key(tmp_path / "keys/device.key"), store=MemorySequenceStore())
    sent = [signer.sign("stats", TOPIC, {"n": i}) for i in range(3)]
    lines = [json.dumps({"topic": TOPIC, "payload": encode(e).decode()}).encode() + b"\n" for e in sent]
    state = tmp_path / "receiver.json"
    args = ["verify", "--pubkey", str(tmp_path / "keys/device.pub.jwk"), "--state", str(state)]
    _interrupted_stdin(monkeypatch, lines)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "verify: 3 message(s): 3 ok, 0 rejected, 0 malformed; 0 gap(s), 0 missing" in err
    assert "verify: interrupted after line 3" in err
    saved = json.loads(state.read_text())
    assert [(s["boot"], s["seq"]) for s in saved["streams"]] == [(1, 3)]

    _interrupted_stdin(monkeypatch, lines[2:])  # the next run: a replay of what was seen
    assert main(args) == 1
    assert capsys.readouterr().out.startswith("line 1: rejected [dev lobby-1 boot 1 seq 3]: out of order")
