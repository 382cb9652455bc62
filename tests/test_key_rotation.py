"""`emotion-agent keys rotate` (issue 14 item 4), on real runs of the agent.

A run publishes with key A; the key is rotated with the service stopped; the next run starts
(the state signed by A is followed, not refused) and publishes with key B. `emotion-agent
verify` given only A's public key verifies the whole recorded stream by following the
key-rotation notice A signed, and `audit verify` passes across the rotation with either key.
A notice signed by another key is refused; the command refuses while the service holds the
state folder; an interrupted rotation leaves the old key working and a second run finishes it.
Before: there was no such command, `audit verify` and the start check did not follow a
rotation, and the spool's row check would have quarantined the notice signed by the old key.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import key_rotation
from agent.audit import AuditLog
from agent.cli import main
from agent.crypto import (
    MemorySequenceStore,
    Signer,
    encode,
    generate_keypair,
    kid_for,
    load_private_key,
    load_public_key,
)
from agent.crypto.seqstore import FileSequenceStore

DEVICE = "rot-1"


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--log-level", "WARNING", *args],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )


def run_agent(folder: Path) -> None:
    proc = cli(folder, "run", "-c", "agent.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, sample_clip: Path) -> Path:
    """One run of the agent with key A; A's public key kept aside as A.jwk (the receiver's copy)."""
    folder = tmp_path_factory.mktemp("first")
    generate_keypair(folder / "keys")
    shutil.copy(folder / "keys/device.pub.jwk", folder / "A.jwk")
    (folder / "agent.yaml").write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{sample_clip}", fps: 5, loop: false, realtime: false}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "out.jsonl"}}
keys: {{private_key: "keys/device.key"}}
state_dir: "state"
""")
    run_agent(folder)
    return folder


@pytest.fixture
def site(first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the first run's folder, also the working folder (the config's paths are relative)."""
    folder = tmp_path / "site"
    shutil.copytree(first_run, folder)
    monkeypatch.chdir(folder)
    return folder


def envelopes(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["payload"] for line in (folder / "out.jsonl").read_text().splitlines()]


def kid_of(path: Path) -> str:
    return kid_for(load_public_key(path))


def entries(folder: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for seg in sorted((folder / "state/audit").glob("segment-*.jsonl")):
        lines += [json.loads(x) for x in seg.read_text().splitlines()]
    return lines


def check_chain(folder: Path, old_kid: str, new_kid: str) -> None:
    """Key A up to and including the notice announcing B, then B only from its first message (A
    may sign after the notice when the service ran between an interrupted rotation and its end)."""
    env = envelopes(folder)
    (notice,) = [i for i, e in enumerate(env) if e["typ"] == "key-rotation"]
    assert env[notice]["topic"] == f"emotion-agent/{DEVICE}/key-rotation"
    assert env[notice]["body"]["new_key"]["kid"] == new_kid
    kids = [e["kid"] for e in env]
    first_new = kids.index(new_kid)
    assert notice < first_new
    assert set(kids[:first_new]) == {old_kid}
    assert set(kids[first_new:]) == {new_kid}


def verify_with(folder: Path, pubkey: Path) -> subprocess.CompletedProcess[str]:
    return cli(folder, "verify", "--pubkey", str(pubkey), "out.jsonl")


def audit_verify_with(folder: Path, pubkey: Path) -> subprocess.CompletedProcess[str]:
    return cli(folder, "audit", "verify", "state/audit", "--pubkey", str(pubkey))


@pytest.mark.slow
def test_run_rotate_run_verifies_with_the_first_key_alone(site: Path) -> None:
    old_kid = kid_of(site / "A.jwk")
    rotate = cli(site, "keys", "rotate", "-c", "agent.yaml")
    assert rotate.returncode == 0, rotate.stderr
    new_kid = kid_for(load_private_key(site / "keys/device.key").public_key())
    assert f"key rotated: {old_kid} -> {new_kid}" in rotate.stdout
    assert json.loads((site / "state/audit/state.json").read_text())["kid"] == new_kid

    run_agent(site)  # the start follows the rotation the state records: no refusal
    check_chain(site, old_kid, new_kid)

    verified = verify_with(site, site / "A.jwk")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"key {new_kid} announced by {old_kid} is now trusted for device {DEVICE}" in verified.stdout
    forward = audit_verify_with(site, site / "A.jwk")
    assert forward.returncode == 0, forward.stdout
    assert f"rotation {old_kid} -> {new_kid} followed forward" in forward.stdout
    back = audit_verify_with(site, site / "keys/device.pub.jwk")  # the new key alone
    assert back.returncode == 0, back.stdout
    assert f"rotation {old_kid} -> {new_kid} followed back" in back.stdout

    (rotation,) = [e for e in entries(site) if e["data"].get("event") == "rotation"]
    assert rotation["data"]["kid"] == old_kid
    assert rotation["data"]["new_kid"] == new_kid


@pytest.mark.slow
def test_the_key_files_after_a_rotation(site: Path) -> None:
    old_key = (site / "keys/device.key").read_bytes()
    old_kid = kid_of(site / "A.jwk")
    assert main(["keys", "rotate", "-c", "agent.yaml", "--key", "keys/device.key"]) == 0
    key = site / "keys/device.key"
    new_kid = kid_for(load_private_key(key).public_key())
    assert key.read_bytes() != old_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not (site / "keys/device.key.next").exists()
    kept = site / f"keys/device.{old_kid}.pub.jwk"
    assert json.loads(kept.read_text()) == json.loads((site / "A.jwk").read_text())
    assert kid_of(site / "keys/device.pub.jwk") == new_kid
    assert kid_of(site / "keys/device.pub.b64") == new_kid


@pytest.mark.slow
def test_rotate_refuses_while_the_service_holds_the_state_folder(site: Path) -> None:
    key = (site / "keys/device.key").read_bytes()
    held = FileSequenceStore(site / "state")  # what the running service holds
    try:
        proc = cli(site, "keys", "rotate", "-c", "agent.yaml")
    finally:
        held.close()
    assert proc.returncode == 2
    assert proc.stderr.startswith("emotion-agent: error: ")
    assert "the agent is running (it holds signer-state.lock); stop it first" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert (site / "keys/device.key").read_bytes() == key
    assert not (site / "keys/device.key.next").exists()


class PowerCut(Exception):
    """Stands for the process dying at that point."""


def stage_only(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 1 done, nothing else: the staged key exists, no notice."""
    generate_keypair(site / "staging")
    os.replace(site / "staging/device.key", site / "keys/device.key.next")


def crash_before_notice(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation entry is in the audit log, the notice never reached an output."""
    def cut(*_args: object, **_kwargs: object) -> None:
        raise PowerCut
    with monkeypatch.context() as patch:
        patch.setattr(key_rotation.Publisher, "publish", cut)
        with pytest.raises(PowerCut):
            main(["keys", "rotate", "-c", "agent.yaml"])


def crash_before_switch(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notice spooled, state attested by the new key, but the key file not yet switched."""
    def cut(*_args: object) -> None:
        raise PowerCut
    with monkeypatch.context() as patch:
        patch.setattr(key_rotation, "_switch", cut)
        with pytest.raises(PowerCut):
            main(["keys", "rotate", "-c", "agent.yaml"])


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [stage_only, crash_before_notice, crash_before_switch])
def test_an_interrupted_rotation_keeps_the_old_key_and_a_second_run_finishes_it(
    site: Path, monkeypatch: pytest.MonkeyPatch, interrupt: Any
) -> None:
    old_kid = kid_of(site / "A.jwk")
    interrupt(site, monkeypatch)
    staged = site / "keys/device.key.next"
    staged_kid = kid_for(load_private_key(staged).public_key())
    assert kid_for(load_private_key(site / "keys/device.key").public_key()) == old_kid

    before = len(envelopes(site))
    run_agent(site)  # the service still starts, and signs with the old key
    assert {e["kid"] for e in envelopes(site)[before:]} == {old_kid}

    again = cli(site, "keys", "rotate", "-c", "agent.yaml")
    assert again.returncode == 0, again.stderr
    assert f"key rotated: {old_kid} -> {staged_kid}" in again.stdout
    announced = interrupt is not crash_before_switch
    assert ("recorded and spooled" in again.stdout) is announced
    run_agent(site)
    check_chain(site, old_kid, staged_kid)
    assert verify_with(site, site / "A.jwk").returncode == 0
    assert audit_verify_with(site, site / "A.jwk").returncode == 0


@pytest.mark.slow
def test_a_notice_signed_by_another_key_is_refused(site: Path) -> None:
    assert cli(site, "keys", "rotate", "-c", "agent.yaml").returncode == 0
    run_agent(site)
    lines = (site / "out.jsonl").read_text().splitlines()
    (at,) = [i for i, line in enumerate(lines) if '"typ":"key-rotation"' in line]
    real = json.loads(lines[at])["payload"]
    intruder = load_private_key(generate_keypair(site / "intruder").private_path)
    signer = Signer(DEVICE, intruder, store=MemorySequenceStore(real["boot"], real["seq"]))
    forged = signer.sign("key-rotation", real["topic"], real["body"])  # announces the real new key
    lines[at] = json.dumps({"topic": real["topic"], "payload": json.loads(encode(forged))})
    (site / "forged.jsonl").write_text("\n".join(lines) + "\n")
    proc = cli(site, "verify", "--pubkey", "A.jwk", "forged.jsonl")
    assert proc.returncode == 1
    where = f"[dev {DEVICE} boot {real['boot']} seq {real['seq']}]"
    assert f"line {at + 1}: rejected {where}: unknown kid {kid_for(intruder.public_key())}" in proc.stdout
    assert f"line {at + 2}: rejected" in proc.stdout  # the first message of the new key: not followed


@pytest.fixture
def shared_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The site in a folder another user can reach (tmp_path's parents are root's, 0700)."""
    top = Path(tempfile.mkdtemp(prefix="rotate-owner-"))
    try:
        top.chmod(0o755)
        folder = top / "site"
        shutil.copytree(site, folder)
        folder.chmod(0o755)
        monkeypatch.chdir(folder)
        yield folder
    finally:
        shutil.rmtree(top)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the state folder to another user")
def test_as_root_the_state_folder_keeps_its_owner(shared_site: Path) -> None:
    """systemd: root rotates, the service user owns state_dir and must still write every file."""
    nobody = 65534
    for path in [shared_site / "state", *(shared_site / "state").rglob("*"), shared_site / "out.jsonl"]:
        os.chown(path, nobody, nobody)
    proc = cli(shared_site, "keys", "rotate", "-c", "agent.yaml")
    assert proc.returncode == 0, proc.stderr
    state = shared_site / "state"
    owners = {p.relative_to(state).as_posix(): p.stat().st_uid for p in state.rglob("*")}
    assert "audit/state.json" in owners
    assert set(owners.values()) == {nobody}, owners
    assert (shared_site / "keys/device.key").stat().st_uid == 0


@pytest.mark.slow
def test_a_checkpoint_the_disk_refuses_stops_the_rotation_before_the_switch(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new key's checkpoint over the rotation never reaches the disk (ENOSPC): exit 1, the
    old key stays in place (the next start would otherwise find a log it cannot follow)."""
    old_kid = kid_of(site / "A.jwk")
    stage_only(site, monkeypatch)
    staged_kid = kid_for(load_private_key(site / "keys/device.key.next").public_key())
    real = AuditLog._checkpoint

    def refused(log: AuditLog) -> Any:
        if kid_for(log._key.public_key()) == staged_kid:  # fault injection: the new key's notes only
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(log)

    with monkeypatch.context() as patch:
        patch.setattr(AuditLog, "_checkpoint", refused)
        assert main(["keys", "rotate", "-c", "agent.yaml"]) == 1
    assert "the key was not switched" in capsys.readouterr().err
    assert kid_for(load_private_key(site / "keys/device.key").public_key()) == old_kid
    run_agent(site)  # still starts, with the old key
    assert main(["keys", "rotate", "-c", "agent.yaml"]) == 0
    run_agent(site)
    check_chain(site, old_kid, staged_kid)
    assert verify_with(site, site / "A.jwk").returncode == 0
    assert audit_verify_with(site, site / "A.jwk").returncode == 0


def test_a_key_behind_a_symbolic_link_is_refused_before_any_step(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The switch opens the key O_NOFOLLOW: a symlinked key failed there, after the notice was
    sent and the public files held the new key, every run again (found by review)."""
    (site / "keys/device.key").rename(site / "keys/real.key")
    (site / "keys/device.key").symlink_to("real.key")
    jwk = (site / "keys/device.pub.jwk").read_text()
    assert main(["keys", "rotate", "-c", "agent.yaml", "--key", "keys/device.key"]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link (to real.key)" in err
    assert err.count("\n") == 1
    assert (site / "keys/device.pub.jwk").read_text() == jwk
    assert not (site / "keys/device.key.next").exists()
    assert main(["keys", "rotate", "-c", "agent.yaml", "--key", "keys/real.key"]) == 0
