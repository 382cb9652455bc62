"""``emotion-agent command sign`` makes a command the device accepts once, for itself only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli import main
from agent.crypto import generate_keypair, kid_for, load_public_key
from agent.crypto.canonical import JSON, b64url_encode, canonical
from agent.errors import PayloadError
from agent.transport.commands import CommandParser

TOPIC = "emotion-agent/lobby-1/cmd/privacy_mode/set"


def test_a_signed_off_is_accepted_by_its_device_and_refused_by_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = generate_keypair(tmp_path / "op")
    assert main(["command", "sign", "--key", str(info.private_path), "--device", "lobby-1", "off"]) == 0
    payload = capsys.readouterr().out.strip().encode()
    operator = load_public_key(info.jwk_path)
    ours = CommandParser("emotion-agent/lobby-1", device_id="lobby-1", operator_key=operator)
    command = ours.parse(TOPIC, payload)
    assert command.on is False
    assert command.signed
    other = CommandParser("emotion-agent/lobby-1", device_id="lobby-2", operator_key=operator)
    with pytest.raises(PayloadError, match="signed for device 'lobby-1', not 'lobby-2'"):
        other.parse(TOPIC, payload)
    tampered = payload.replace(b'"OFF"', b'"ON"')
    with pytest.raises(PayloadError, match="does not verify"):
        ours.parse(TOPIC, tampered)
    with pytest.raises(PayloadError, match="needs a command signed by the operator key"):
        ours.parse(TOPIC, b"OFF")
    assert ours.parse(TOPIC, b"ON").on is True  # privacy ON (camera off) never needs a signature


def test_a_key_the_agent_would_refuse_is_exit_2_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = generate_keypair(tmp_path / "op")
    info.private_path.chmod(0o644)
    assert main(["command", "sign", "--key", str(info.private_path), "--device", "lobby-1", "off"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "emotion-agent: error:" in err


def test_a_signed_command_whose_version_is_true_is_refused() -> None:
    """JSON ``true`` equals 1 in Python; the format says the integer 1 (found by review)."""
    key = Ed25519PrivateKey.generate()
    obj: dict[str, JSON] = {"v": True, "cmd": "privacy_mode", "state": "OFF", "dev": "lobby-1",
                              "ts": 1_800_000_000_000, "nonce": "n" * 16, "kid": kid_for(key.public_key())}
    obj["sig"] = b64url_encode(key.sign(canonical(obj)))
    parser = CommandParser("emotion-agent/lobby-1", device_id="lobby-1", operator_key=key.public_key())
    with pytest.raises(PayloadError, match="needs v 1"):
        parser.parse(TOPIC, json.dumps(obj).encode())
