"""The start refuses lost or altered state and never reuses boot or sequence numbers
(issue 18 item 6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.rotation import rotation_fields
from agent.clock import FakeClock
from agent.crypto import Signer, kid_for
from agent.errors import PayloadError
from agent.state_check import check_state_dir
from tests.audit.helpers import HASH, start

ORIGIN = "emotion-agent/lobby-1"


def run_once(state: Path, key: Ed25519PrivateKey, publishes: int = 3) -> Signer:
    """What a run leaves: a boot, audited publishes, a closed log; returns the closed signer."""
    floor = check_state_dir(state, key.public_key()).floor
    signer = Signer("lobby-1", key, state, FakeClock(), floor=floor)
    log = AuditLog.open(state / "audit", key, ORIGIN, FakeClock(), AuditConfig())
    log.append("start", start(boot=signer.boot))
    for _ in range(publishes):
        env = signer.sign("stats", f"{ORIGIN}/stats", {"n": 1})
        log.append("publish", {"topic": f"{ORIGIN}/stats", "seq": env["seq"], "payload_sha256": HASH})
    log.close()
    signer.close()
    return signer


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_first_run_and_a_normal_restart_pass(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    assert check_state_dir(tmp_path, key.public_key()).floor is None
    run_once(tmp_path, key)
    assert check_state_dir(tmp_path, key.public_key()).floor == (1, 3)


def test_a_deleted_audit_folder_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    shutil.rmtree(tmp_path / "audit")
    with pytest.raises(PayloadError, match=r"audit/ is missing but signer-state\.json shows an earlier run"):
        check_state_dir(tmp_path, key.public_key())


def test_a_deleted_checkpoints_log_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    (tmp_path / "audit/checkpoints.log").unlink()
    with pytest.raises(PayloadError, match=r"checkpoints\.log is missing"):
        check_state_dir(tmp_path, key.public_key())


def test_a_log_that_fails_verification_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    segment = next((tmp_path / "audit").glob("segment-*.jsonl"))
    segment.write_bytes(segment.read_bytes().replace(b'"seq":2', b'"seq":7'))
    with pytest.raises(PayloadError, match="the audit log fails verification"):
        check_state_dir(tmp_path, key.public_key())


def test_a_truncated_log_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    segment = next((tmp_path / "audit").glob("segment-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:-2]))
    with pytest.raises(PayloadError, match=r"removed \(rolled back or truncated\)"):
        check_state_dir(tmp_path, key.public_key())


def test_a_deleted_signer_state_continues_after_the_audited_numbers(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Before: boot 1 and seq 1 were used again."""
    first = run_once(tmp_path, key)
    assert first.boot == 1
    (tmp_path / "signer-state.json").unlink()
    floor = check_state_dir(tmp_path, key.public_key()).floor
    signer = Signer("lobby-1", key, tmp_path, FakeClock(), floor=floor)
    env = signer.sign("stats", f"{ORIGIN}/stats", {"n": 1})
    assert env["boot"] == 2
    assert env["seq"] > 3
    assert signer.rebuilt is not None
    assert "signer-state.json was missing" in signer.rebuilt
    signer.close()


def test_a_rolled_back_signer_state_is_raised_not_reused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    old = (tmp_path / "signer-state.json").read_text()
    run_once(tmp_path, key, publishes=300)  # boot 2 uses more than one block
    (tmp_path / "signer-state.json").write_text(old)
    floor = check_state_dir(tmp_path, key.public_key()).floor
    assert floor == (2, 556)  # boot 1 reserved 1..256, boot 2 used 257..556
    signer = Signer("lobby-1", key, tmp_path, FakeClock(), floor=floor)
    env = signer.sign("stats", f"{ORIGIN}/stats", {"n": 1})
    assert (env["boot"], env["seq"] > 556) == (3, True)
    assert json.loads((tmp_path / "signer-state.json").read_text())["boot"] == 3
    signer.close()


def rotate_in_log(state: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    """What `keys rotate` leaves in the log: the rotation closed by the old key, reopened and
    closed by the new one (state.json and a checkpoint signed by it)."""
    log = AuditLog.open(state / "audit", old, ORIGIN, FakeClock(), AuditConfig())
    log.append("key_event", rotation_fields(old.public_key(), new.public_key()))
    log.close()
    AuditLog.open(state / "audit", new, ORIGIN, FakeClock(), AuditConfig()).close()


def test_after_a_key_rotation_the_start_follows_it(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14 item 4. Before: the old key's checkpoints did not count, so the start refused
    the log ("a checkpoint was deleted")."""
    new = Ed25519PrivateKey.generate()
    run_once(tmp_path, key)
    rotate_in_log(tmp_path, key, new)
    state = check_state_dir(tmp_path, new.public_key())
    assert state.floor == (1, 3)
    assert [kid_for(k) for k in state.linked_keys] == [kid_for(key.public_key())]
    run_once(tmp_path, new)  # the next run continues the log with the new key
    assert check_state_dir(tmp_path, new.public_key()).floor == (2, 259)


def test_a_key_the_log_does_not_link_to_is_still_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    run_once(tmp_path, key)
    rotate_in_log(tmp_path, key, Ed25519PrivateKey.generate())
    with pytest.raises(PayloadError, match="the audit log fails verification"):
        check_state_dir(tmp_path, Ed25519PrivateKey.generate().public_key())


def test_a_key_that_is_not_the_devices_is_named_as_such_not_as_a_deleted_checkpoint(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A provisioning slip (another device's key, a key made again): the start said a checkpoint
    was deleted and to restore state_dir from a backup, the consequence of no checkpoint verifying."""
    run_once(tmp_path, key)
    log = AuditLog.open(tmp_path / "audit", key, ORIGIN, FakeClock(), AuditConfig())
    log.append("key_event", {"event": "boot", "kid": kid_for(key.public_key())})
    log.close()
    other = Ed25519PrivateKey.generate()
    with pytest.raises(PayloadError) as info:
        check_state_dir(tmp_path, other.public_key())
    said = str(info.value)
    assert f"no checkpoint in it is signed by this key (kid {kid_for(other.public_key())})" in said
    assert f"written with another key (kid {kid_for(key.public_key())} at its last start)" in said
    assert "keys.private_key is not the key this device ran with" in said
    assert "deleted" not in said
    assert check_state_dir(tmp_path, key.public_key()).floor == (1, 3)  # the right key still starts


def test_a_log_whose_every_checkpoint_is_another_keys_is_refused_at_the_first_start(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A log with nothing wrong in it but the key: every checkpoint verified, just not by this key.
    The check dropped those as "another key's" and found no other problem, so the first start
    with a new key went ahead, appended to the log and signed with a key no receiver trusts; the
    next start then said a checkpoint was deleted (found by a new-user trial: `run` with
    keys.private_key changed, twice)."""
    run_once(tmp_path, key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(PayloadError) as info:
        check_state_dir(tmp_path, other.public_key())
    said = str(info.value)
    assert f"no checkpoint in it is signed by this key (kid {kid_for(other.public_key())})" in said
    assert "keys.private_key is not the key this device ran with" in said
    assert check_state_dir(tmp_path, key.public_key()).floor == (1, 3)


def test_a_log_another_key_went_on_with_says_so_beside_what_fails(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A log that a run with a changed key went on with (before the start refused it): the check
    of the new key fails on the old key's part ("a checkpoint was deleted"), which alone sent the
    installer to restore a backup; it now also says how many checkpoints another key signed."""
    run_once(tmp_path, key)
    other = Ed25519PrivateKey.generate()
    log = AuditLog.open(tmp_path / "audit", other, ORIGIN, FakeClock(), AuditConfig())
    log.append("start", start(boot=2))
    log.close()
    with pytest.raises(PayloadError) as info:
        check_state_dir(tmp_path, other.public_key())
    said = str(info.value)
    assert "checkpoints are signed by a key neither this one nor a recorded rotation links to" in said
    assert "keys.private_key changed without `emotion-agent keys rotate`" in said
