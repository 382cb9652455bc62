"""`emotion-agent audit verify` / `audit report` as an auditor runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit import report as report_module
from agent.audit.note import sign_checkpoint, split_notes
from agent.cli import main
from agent.clock import FakeClock
from agent.crypto import public_jwk

from .conftest import OpenLog
from .helpers import ORIGIN, fill, start, window


@pytest.fixture
def exported(open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """A closed log plus the device's public key as a JWK file."""
    log = open_log(checkpoint_every_entries=5)
    fill(log, clock, 6)
    log.append("privacy_mode", {"mode": "paused", "source": "mqtt"})
    log.append("window", window(people=2, published=False, suppressed="below_k"))
    log.append("policy_change", {"policy": start()["policy"] | {"min_people": 6}, "reason": "operator"})
    log.append("stop", {"reason": "shutdown", "uptime_ms": 360_000})
    log.close()
    (tmp_path / "device.pub.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    return tmp_path


def test_verify_prints_ok_and_exits_0(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")])
    out = capsys.readouterr().out
    assert code == 0
    assert "entries: 0..25 in 3 segment(s)" in out
    assert out.rstrip().endswith("OK: every entry, checkpoint and invariant verified")


def test_verify_names_the_first_bad_entry_and_exits_1(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seg = exported / "audit/segment-000000000010.jsonl"
    seg.write_bytes(seg.read_bytes().replace(b'"people":7', b'"people":3', 1))
    code = main(["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")])
    out = capsys.readouterr().out
    assert code == 1
    fail = next(line for line in out.splitlines() if line.startswith("FAIL: "))
    assert re.fullmatch(
        r"FAIL: segment-000000000010\.jsonl line \d+ \(entry \d+\): window published with 3 people, "
        r"fewer than k = 5",
        fail,
    )


def test_verify_reads_external_checkpoints_from_json_lines(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_note = "".join((exported / "audit/checkpoints.log").read_text().splitlines(keepends=True)[:5])
    ext = exported / "retained.jsonl"
    ext.write_text(
        json.dumps({"topic": "x/audit/checkpoint", "payload": {"body": {"note": first_note}}}) + "\n"
    )
    code = main(
        [
            "audit",
            "verify",
            str(exported / "audit"),
            "--pubkey",
            str(exported / "device.pub.jwk"),
            "--checkpoints",
            str(ext),
        ]
    )
    assert code == 0
    assert "1 external" in capsys.readouterr().out


def test_verify_reads_checkpoints_saved_by_mosquitto_sub_json_format(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mosquitto_sub -F %j` stores the payload as a string of JSON."""
    lines = (exported / "audit/checkpoints.log").read_text().splitlines(keepends=True)
    envelope = json.dumps({"typ": "audit-checkpoint", "body": {"note": "".join(lines[-5:])}})
    saved = {
        "tst": "2026-11-23T20:00:00.000000Z+0000",
        "topic": "emotion-agent/lobby-1/audit/checkpoint",
        "qos": 1,
        "retain": 1,
        "payloadlen": len(envelope),
        "payload": envelope,
    }
    ext = exported / "sub.jsonl"
    ext.write_text(json.dumps(saved) + "\n")
    args = ["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main([*args, "--checkpoints", str(ext)]) == 0
    assert "1 external" in capsys.readouterr().out


def _recorded(topic: str, body: dict[str, object]) -> str:
    """One line of ``mosquitto_sub -F %j``: the payload a string of JSON."""
    return json.dumps({"topic": topic, "qos": 1, "retain": 0, "payload": json.dumps({"body": body})}) + "\n"


def test_a_sites_whole_recording_gives_this_logs_checkpoints_and_skips_the_rest(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recording docs/mqtt.md makes (``emotion-agent/#``) was refused at its first stats
    line (exit 2), and once filtered, another device's checkpoint failed this genuine log
    (exit 1). Found by an auditor's trial."""
    own = "".join((exported / "audit/checkpoints.log").read_text().splitlines(keepends=True)[-5:])
    theirs = sign_checkpoint("emotion-agent/lobby-3", 3, b"\x01" * 32, Ed25519PrivateKey.generate()).note
    ext = exported / "site.jsonl"
    ext.write_text(
        _recorded("emotion-agent/lobby-1/stats", {"people": 6})
        + _recorded("emotion-agent/lobby-1/audit/checkpoint", {"note": own})
        + _recorded("emotion-agent/lobby-3/audit/checkpoint", {"note": theirs.decode()})
        + _recorded("emotion-agent/lobby-1/health", {"camera": "up"})
    )
    args = ["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main([*args, "--checkpoints", str(ext)]) == 0
    out = capsys.readouterr().out
    assert "1 external" in out
    assert "warning: 1 external checkpoint(s) of other logs skipped: emotion-agent/lobby-3 (1)" in out


def test_a_bad_checkpoint_in_a_recording_is_named_by_its_line_in_the_file(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Notes were joined and counted by their own lines: line 4 of a file was "line 11"."""
    notes = (exported / "audit/checkpoints.log").read_text().splitlines(keepends=True)
    good, bad = "".join(notes[-5:]), notes[-10:-5]
    bad[2] = ("B" if bad[2][0] == "A" else "A") + bad[2][1:]  # another root, the same signature
    bad = "".join(bad)
    ext = exported / "site.jsonl"
    ext.write_text(
        _recorded("emotion-agent/lobby-1/stats", {"people": 6})
        + _recorded("emotion-agent/lobby-1/audit/checkpoint", {"note": good})
        + _recorded("emotion-agent/lobby-1/stats", {"people": 5})
        + _recorded("emotion-agent/lobby-1/audit/checkpoint", {"note": bad})
    )
    args = ["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main([*args, "--checkpoints", str(ext)]) == 1
    fails = [line for line in capsys.readouterr().out.splitlines() if "checkpoint rejected" in line]
    assert fails
    assert fails[0].startswith(f"FAIL: {ext} line 4: checkpoint rejected"), fails


def test_verify_of_a_missing_folder_is_a_clear_input_error(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    code = main(["audit", "verify", str(tmp_path / "nope"), "--pubkey", str(tmp_path / "k.jwk")])
    assert code == 2
    assert "nope: no such folder (give the audit folder, e.g. state_dir/audit)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")  # "not a directory" was said of a folder that does not exist
    code = main(["audit", "verify", str(tmp_path / "file"), "--pubkey", str(tmp_path / "k.jwk")])
    assert code == 2
    assert "file: not a folder (give the audit folder, e.g. state_dir/audit)" in capsys.readouterr().err


def test_report_is_one_self_contained_page_with_plots(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported / "report.html"
    code = main(
        [
            "audit",
            "report",
            str(exported / "audit"),
            "--pubkey",
            str(exported / "device.pub.jwk"),
            "-o",
            str(out),
        ]
    )
    page = out.read_text()
    assert code == 0
    assert "VERIFIED" in page
    assert page.count("<svg") == 3
    assert "<script" not in page
    assert re.findall(r"(?:src|href)=", page) == []
    assert "lobby-1" in page
    assert "ab" * 32 in page  # model hash
    assert "operator" in page  # the policy change
    assert "mode=paused" in page
    assert "<td>6</td>" in page  # the new k in the policy timeline
    assert "report written (verified)" in capsys.readouterr().err


def test_report_of_a_tampered_log_says_so_and_exits_1(exported: Path) -> None:
    (exported / "audit/segment-000000000000.jsonl").unlink()
    out = exported / "report.html"
    code = main(
        [
            "audit",
            "report",
            str(exported / "audit"),
            "--pubkey",
            str(exported / "device.pub.jwk"),
            "-o",
            str(out),
        ]
    )
    assert code == 1
    page = out.read_text()
    assert "VERIFICATION FAILED" in page
    assert "no purge entry records their removal" in page


def test_the_installed_command_exits_0_on_a_good_log(exported: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "audit",
            "verify",
            str(exported / "audit"),
            "--pubkey",
            str(exported / "device.pub.jwk"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK:" in done.stdout


def test_report_after_a_purge_still_shows_what_ran_and_the_policy(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(retention_days=365, segment_max_entries=10)
    fill(log, clock, 5)
    clock.advance(400 * 86_400)
    assert log.purge() is not None
    log.append("stop", {"reason": "shutdown", "uptime_ms": 1})
    log.close()
    (tmp_path / "k.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    out = tmp_path / "r.html"
    code = main(
        ["audit", "report", str(tmp_path / "audit"), "--pubkey", str(tmp_path / "k.jwk"), "-o", str(out)]
    )
    page = out.read_text()
    assert code == 0
    assert "segment-000000000000.jsonl" in page  # the purge table
    assert "in force at the first kept entry" in page
    assert "lobby-1" in page
    assert "cd" * 32 in page  # the emotion model's hash, carried past the purge


def test_pubkey_can_be_repeated_for_a_rotated_key(
    exported: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    new = Ed25519PrivateKey.generate()
    log = AuditLog.open(exported / "audit", new, ORIGIN, clock, AuditConfig())
    log.append("key_event", {"event": "rotated", "kid": "k2"})
    log.close()
    (exported / "new.jwk").write_text(json.dumps(public_jwk(new.public_key())))
    args = ["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main(args) == 1
    assert main([*args, "--pubkey", str(exported / "new.jwk")]) == 0


def _replace_with_a_folder(path: Path) -> None:
    """An unreadable file that stays unreadable as root (chmod 000 does not stop root)."""
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    "name", ["segment-000000000000.jsonl", "segment-000000000010.jsonl", "checkpoints.log"]
)
@pytest.mark.parametrize("command", ["verify", "report"])
def test_an_unreadable_log_file_cannot_be_checked_exit_2_one_line(
    exported: Path, name: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 means "checked and found bad"; a file that cannot be read was not checked."""
    _replace_with_a_folder(exported / "audit" / name)
    args = ["audit", command, str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    if command == "report":
        args += ["-o", str(exported / "report.html")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(
        rf"emotion-agent: error: {re.escape(str(exported / 'audit' / name))}: cannot read the "
        r"(audit segment|checkpoints file): Is a directory\n",
        captured.err,
    )
    assert not (exported / "report.html").exists()


def test_the_report_names_a_segment_that_became_unreadable_after_verification(
    exported: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report reads the segments a second time for its plots; that read is guarded too."""
    real = report_module.collect

    def collect_after_a_change(directory: Path) -> report_module.Stats:
        _replace_with_a_folder(directory / "segment-000000000010.jsonl")
        return real(directory)

    monkeypatch.setattr(report_module, "collect", collect_after_a_change)
    out = exported / "report.html"
    args = ["audit", "report", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "segment-000000000010.jsonl: cannot read the audit segment: Is a directory" in err
    assert not out.exists()


def test_the_installed_command_prints_no_traceback_for_an_unreadable_segment(exported: Path) -> None:
    _replace_with_a_folder(exported / "audit/segment-000000000000.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "agent", "audit", "verify", str(exported / "audit"),
         "--pubkey", str(exported / "device.pub.jwk")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "segment-000000000000.jsonl: cannot read the audit segment: Is a directory" in done.stderr


@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_witness_given_twice_exits_2_naming_it(
    exported: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same --witness twice was taken, and every line about it was printed twice."""
    from agent.audit.cosignature import cosigner_key_id, cosigner_vkey  # noqa: PLC0415

    witness = Ed25519PrivateKey.generate().public_key()
    vkey = cosigner_vkey("witness.test", witness)
    out = ["--output", str(tmp_path / "r.html")] if command == "report" else []
    args = ["audit", command, str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk"), *out]
    assert main([*args, "--witness", vkey, "--witness", vkey]) == 2
    err = capsys.readouterr().err
    key_id = cosigner_key_id("witness.test", witness).hex()
    assert f"--witness witness.test (key ID {key_id}) is given twice" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", ["verify", "report"])
@pytest.mark.parametrize("value", ["-5", "0", "abc"])
def test_a_lifetime_bound_that_is_not_positive_is_exit_2(
    exported: Path, tmp_path: Path, command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-lifetime-ms -5`` printed "FAIL: ... a frame lived 0 ms, above the bound of -5 ms",
    exit 1: a verdict on the log from a typo in the command."""
    out = ["--output", str(tmp_path / "r.html")] if command == "report" else []
    args = ["audit", command, str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk"), *out]
    with pytest.raises(SystemExit) as info:
        main([*args, "--max-lifetime-ms", value])
    assert info.value.code == 2
    assert "argument --max-lifetime-ms: expected a whole number of at least 1" in capsys.readouterr().err


def _make_log(root: Path, key: Ed25519PrivateKey, origin: str, minutes: int) -> Path:
    clock = FakeClock(start=1_800_000_000.0)
    cfg = AuditConfig(checkpoint_every_entries=5, segment_max_entries=10)
    log = AuditLog.open(root, key, origin, clock, cfg, retention_days=365)
    fill(log, clock, minutes)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 60_000 * minutes})
    log.close()
    return root


def test_a_log_rewritten_under_the_devices_other_origin_cannot_have_its_checkpoints_skipped(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Skipping "other logs" by the origin of the log's own first checkpoint let a key holder
    re-sign a shortened log under the legacy origin (``<id>/audit``, also the device's): every
    genuine published checkpoint was then skipped and the rewrite verified (found by review).
    A note the device key signs is the device's, whatever origin it names."""
    genuine = _make_log(tmp_path / "genuine", key, "emotion-agent/lobby-1", 6)
    notes = [n.decode() for _, n in split_notes((genuine / "checkpoints.log").read_bytes())[0]]
    recording = tmp_path / "site.jsonl"
    topic = "emotion-agent/lobby-1/audit/checkpoint"
    recording.write_text("".join(_recorded(topic, {"note": n}) for n in notes))
    forged = _make_log(tmp_path / "forged", key, "emotion-agent/lobby-1/audit", 2)
    (tmp_path / "pub.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    args = ["audit", "verify", str(forged), "--pubkey", str(tmp_path / "pub.jwk")]
    assert main([*args, "--checkpoints", str(recording)]) == 1
    out = capsys.readouterr().out
    assert "other logs skipped" not in out
    assert "a log has one origin" in out


def test_another_devices_checkpoint_is_skipped_before_this_log_has_a_checkpoint(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run killed before its first checkpoint: the other device's note was checked against
    this device's key and failed the log (found by review)."""
    log = open_log(checkpoint_every_entries=50)
    fill(log, clock, 2)
    del log  # killed: nothing signed yet
    theirs = sign_checkpoint("emotion-agent/lobby-3", 3, b"\x01" * 32, Ed25519PrivateKey.generate()).note
    recording = tmp_path / "site.jsonl"
    recording.write_text(_recorded("emotion-agent/lobby-3/audit/checkpoint", {"note": theirs.decode()}))
    (tmp_path / "pub.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    args = ["audit", "verify", str(tmp_path / "audit"), "--pubkey", str(tmp_path / "pub.jwk")]
    assert main([*args, "--checkpoints", str(recording)]) == 0
    out = capsys.readouterr().out
    assert "1 external checkpoint(s) of other logs skipped: emotion-agent/lobby-3 (1)" in out


def test_a_garbage_note_in_a_recording_is_named_by_its_line_in_the_file(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: "line 1" for a note on line 3."""
    own = "".join((exported / "audit/checkpoints.log").read_text().splitlines(keepends=True)[-5:])
    recording = exported / "site.jsonl"
    recording.write_text(
        _recorded("emotion-agent/lobby-1/stats", {"people": 6})
        + _recorded("emotion-agent/lobby-1/audit/checkpoint", {"note": own})
        + _recorded("emotion-agent/lobby-1/audit/checkpoint", {"note": "emotion-agent/lobby-1\n7\nno hash\n"})
    )
    args = ["audit", "verify", str(exported / "audit"), "--pubkey", str(exported / "device.pub.jwk")]
    assert main([*args, "--checkpoints", str(recording)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: {recording} line 3: " in out
