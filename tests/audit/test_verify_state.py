"""`audit verify` reads state.json (signed by the device before every append) and refuses files
of the log that are not regular files, before reading them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.note import sign_checkpoint, split_notes
from agent.audit.statefile import Head, signed_state
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.crypto import public_jwk

from .conftest import OpenLog
from .helpers import ORIGIN, fill, start

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def audit(open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    fill(log, clock, 4)
    log.close()
    return tmp_path / "audit"


def test_a_closed_log_verifies_against_its_state(audit: Path, key: Ed25519PrivateKey) -> None:
    result = verify_log(audit, key.public_key())
    assert (result.problems, result.warnings) == ([], [])


@pytest.mark.parametrize("name", ["state.json", "checkpoints.log"])
def test_a_deleted_state_or_checkpoints_file_fails(audit: Path, key: Ed25519PrivateKey, name: str) -> None:
    (audit / name).unlink()
    problems = verify_log(audit, key.public_key()).problems
    assert any(p.startswith(f"{name} is missing") and "deleted" in p for p in problems), problems


def test_a_state_signed_by_an_unknown_key_fails(audit: Path, key: Ed25519PrivateKey) -> None:
    state = json.loads((audit / "state.json").read_bytes())
    other = Ed25519PrivateKey.generate()
    head = Head(state["size"], b"\0" * 32, [], state["segment"], state["segment_count"])
    (audit / "state.json").write_text(json.dumps(signed_state(ORIGIN, head, other)))
    problems = verify_log(audit, key.public_key()).problems
    assert any(p.startswith("state.json: no signature by the trusted key") for p in problems), problems


def test_an_altered_state_fails(audit: Path, key: Ed25519PrivateKey) -> None:
    state = json.loads((audit / "state.json").read_bytes())
    state["size"] += 5
    (audit / "state.json").write_text(json.dumps(state))
    problems = verify_log(audit, key.public_key()).problems
    assert problems == ["state.json: its signature does not verify with the device key: it was altered"]


@pytest.mark.parametrize("size", ["Infinity", "1e999", "7.5", "-1"])
def test_a_state_whose_size_is_not_a_count_is_reported_not_a_crash(
    audit: Path, key: Ed25519PrivateKey, size: str
) -> None:
    """``"size": Infinity`` (json reads it, and 1e999, as a float) raised OverflowError out of
    `audit verify` and `audit report`, a traceback with exit 1; 7.5 was read as 7."""
    text = (audit / "state.json").read_text()
    state = json.loads(text)
    (audit / "state.json").write_text(text.replace(f'"size":{state["size"]}', f'"size":{size}', 1))
    assert json.loads((audit / "state.json").read_text(), parse_constant=str)["size"] != state["size"]
    problems = verify_log(audit, key.public_key()).problems
    assert any(p.startswith("state.json: ") and "is not a count" in p for p in problems), problems


def test_an_edge_file_whose_size_is_infinite_is_set_aside(tmp_path: Path) -> None:
    """The device's ``checkpoint-edge.json`` with ``"size": Infinity``: every checkpoint's
    publish raised OverflowError (none was published) and the file was never rewritten."""
    from agent.audit.witnessing import CheckpointProver  # noqa: PLC0415

    edge = tmp_path / "checkpoint-edge.json"
    edge.write_text('{"edge": [], "size": Infinity}')
    (tmp_path / "audit").mkdir()
    note = sign_checkpoint(ORIGIN, 0, bytes(32), Ed25519PrivateKey.generate()).note
    assert CheckpointProver(tmp_path / "audit", edge).body_for(note) == {"note": note.decode()}


def test_a_state_one_entry_ahead_is_a_crash_warning(audit: Path, key: Ed25519PrivateKey) -> None:
    seg = audit / "segment-000000000010.jsonl"
    state = json.loads((audit / "state.json").read_bytes())
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:-1]))  # the last line never reached the disk
    notes, _ = split_notes((audit / "checkpoints.log").read_bytes())
    (audit / "checkpoints.log").write_bytes(b"".join(note for _, note in notes[:-1]))  # nor close's
    result = verify_log(audit, key.public_key())
    assert result.problems == []
    assert any(f"state.json attests {state['size']} entries, one more" in w for w in result.warnings)


@pytest.mark.parametrize("name", ["state.json", "checkpoints.log", "segment-000000000010.jsonl"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_file_of_the_log_that_is_not_a_regular_file_is_exit_2(audit: Path, name: str, kind: str) -> None:
    (audit / name).unlink()
    if kind == "fifo":
        os.mkfifo(audit / name)
    else:
        os.symlink("/dev/zero", audit / name)
    (audit.parent / "pub.jwk").write_text(json.dumps({"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pubkey = str(audit.parent / "pub.jwk")
    r = subprocess.run(
        [sys.executable, "-m", "agent", "audit", "verify", str(audit), "--pubkey", pubkey],
        check=False, capture_output=True, text=True, env=env, timeout=30, cwd=REPO,
    )
    assert r.returncode == 2, r.stderr
    assert f"{name}: cannot read the" in r.stderr
    assert "not a regular file" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_fifo_given_as_external_checkpoints_is_exit_2(audit: Path, key: Ed25519PrivateKey) -> None:
    os.mkfifo(audit.parent / "retained.jsonl")
    (audit.parent / "pub.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "agent", "audit", "verify", str(audit),
         "--pubkey", str(audit.parent / "pub.jwk"), "--checkpoints", str(audit.parent / "retained.jsonl")],
        check=False, capture_output=True, text=True, env=env, timeout=30, cwd=REPO,
    )
    assert r.returncode == 2
    assert "retained.jsonl: cannot read the checkpoints file: a FIFO (named pipe), not a regular" in r.stderr


def test_a_state_stripped_of_its_signature_fails_when_the_log_is_of_the_signing_kind(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    """An unsigned state.json is accepted (with a warning) only from a version that did not sign
    it: a segment entry recording `queued` was written by one that does."""
    state = json.loads((audit / "state.json").read_bytes())
    del state["sig"], state["kid"]
    (audit / "state.json").write_text(json.dumps(state))
    problems = verify_log(audit, key.public_key()).problems
    assert problems == [
        "state.json is unsigned, but the last segment was written by a version that signs it (its "
        "segment entry records `queued`): the signature was removed"
    ]


def test_the_agents_origin_verifies(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    log = AuditLog.open(tmp_path / "audit", key, "emotion-agent/lobby-1", clock, AuditConfig())
    fill(log, clock, 3)
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


def test_an_origin_that_is_not_the_devices_fails(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    log = AuditLog.open(tmp_path / "audit", key, "emotion-agent/lobby-2", clock, AuditConfig())
    fill(log, clock, 3)  # start entries name lobby-1
    log.close()
    problems = verify_log(tmp_path / "audit", key.public_key()).problems
    assert problems == [
        "checkpoints.log line 1: checkpoint origin 'emotion-agent/lobby-2' is not the device's: the "
        "start entries name device 'lobby-1', whose checkpoints are signed as 'emotion-agent/lobby-1'"
    ]


def test_checkpoints_of_two_origins_fail(audit: Path, key: Ed25519PrivateKey) -> None:
    result = verify_log(audit, key.public_key())
    other = sign_checkpoint("emotion-agent/lobby-1", result.size, result.root, key)
    with (audit / "checkpoints.log").open("ab") as f:
        f.write(other.note)
    problems = verify_log(audit, key.public_key()).problems
    assert len(problems) == 1
    assert problems[0].endswith(
        "checkpoint origin 'emotion-agent/lobby-1' differs from 'emotion-agent/lobby-1/audit' "
        "(checkpoints.log line 1): a log has one origin"
    )


def test_start_entries_naming_two_devices_fail(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log()
    fill(log, clock, 1)
    log.append("start", start(device_id="lobby-2"))
    log.close()
    problems = verify_log(tmp_path / "audit", key.public_key()).problems
    assert problems == ["the start entries name 2 devices (lobby-1, lobby-2): a log has one"]
