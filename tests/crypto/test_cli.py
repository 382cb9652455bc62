"""The keygen, pubkey and verify commands: output, exit codes (0 ok, 1 rejected, 2 bad input)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli import main
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key

TOPIC = "emotion-agent/lobby-1/stats"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys"


def _signer(keys: Path) -> Signer:
    return Signer("lobby-1", load_private_key(keys / "device.key"), store=MemorySequenceStore())


def _lines(tmp_path: Path, *lines: Any) -> str:
    path = tmp_path / "messages.jsonl"
    path.write_text("".join((x if isinstance(x, str) else encode(x).decode()) + "\n" for x in lines))
    return str(path)


def _verify(keys: Path, *args: str) -> int:
    return main(["verify", "--pubkey", str(keys / "device.pub.jwk"), *args])


def test_keygen_prints_the_kid_and_refuses_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "k"
    assert main(["keygen", "--out", str(keys)]) == 0
    kid = json.loads((keys / "device.pub.jwk").read_text())["kid"]
    assert f"kid: {kid}" in capsys.readouterr().out
    assert main(["keygen", "--out", str(keys)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emotion-agent: error: ")
    assert "device.key, device.pub.jwk, device.pub.b64 already exist(s); keygen never overwrites" in err


def test_keygen_names_a_receivers_or_witness_key_as_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fleet receiver's and a witness's keys are made with keygen too; it called each one the
    device's key (device.key, "keep it on the device"), to be renamed by hand (docs/fleet.md)."""
    keys = tmp_path / "fleet"
    assert main(["keygen", "--out", str(keys), "--name", "witness"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in keys.iterdir()) == ["witness.key", "witness.pub.b64", "witness.pub.jwk"]
    assert "device" not in out, out
    assert f"private key: {keys / 'witness.key'} (mode 0600; keep it on the machine it signs on)" in out
    assert load_private_key(keys / "witness.key").public_key().public_bytes_raw() == base64.b64decode(
        (keys / "witness.pub.b64").read_text()
    )
    assert main(["keygen", "--out", str(keys), "--name", "receiver"]) == 0  # beside it: other files
    capsys.readouterr()
    for bad in ("../witness", ".hidden", "a b", ""):
        with pytest.raises(SystemExit) as info:
            main(["keygen", "--out", str(keys), "--name", bad])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --name: key name {bad!r}: 1-64 letters, digits" in err, err


def test_pubkey_prints_what_keygen_wrote(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["pubkey", "--key", str(keys / "device.key")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((keys / "device.pub.jwk").read_text())
    assert main(["pubkey", "--key", str(keys / "device.key"), "--format", "b64"]) == 0
    assert capsys.readouterr().out == (keys / "device.pub.b64").read_text()


def test_pubkey_refuses_a_key_others_can_read_with_exit_2(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (keys / "device.key").chmod(0o644)
    assert main(["pubkey", "--key", str(keys / "device.key")]) == 2
    assert "device.key: device private key has mode 0644, readable beyond its owner; run `chmod 600" in (
        capsys.readouterr().err
    )


def test_all_good_messages_exit_0(keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = _signer(keys)
    path = _lines(tmp_path, *[signer.sign("stats", TOPIC, {"n": i}) for i in range(5)])
    assert _verify(keys, "--topic", "emotion-agent/+/stats", path) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "verify: 5 message(s): 5 ok, 0 rejected, 0 malformed; 0 gap(s), 0 missing" in captured.err
    assert "topic binding not checked" not in captured.err


def test_bare_envelopes_without_topic_warn_that_binding_was_not_checked(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    assert _verify(keys, path) == 0
    assert "warning: topic binding not checked for 1 message(s)" in capsys.readouterr().err


def test_replay_gap_and_wrong_topic_exit_1_with_one_line_each(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys)
    one, _, three, four = (signer.sign("stats", TOPIC, {"n": i}) for i in range(4))
    moved = json.dumps({"topic": "emotion-agent/lobby-1/alert", "payload": encode(four).decode()})
    path = _lines(tmp_path, one, three, one, moved)
    assert _verify(keys, path) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "line 2: gap [dev lobby-1 boot 1]: seq 2 missing (1 message(s)) before seq 3"
    assert out[1].startswith("line 3: rejected [dev lobby-1 boot 1 seq 1]: replay: seq 1 was already")
    assert out[2] == (
        "line 4: rejected [dev lobby-1 boot 1 seq 4]: signed for topic "
        "'emotion-agent/lobby-1/stats' but arrived on 'emotion-agent/lobby-1/alert'"
    )
    assert len(out) == 3


def test_allow_gaps_reports_but_passes(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys)
    first, _, third = (signer.sign("stats", TOPIC, {}) for _ in range(3))
    assert _verify(keys, "--allow-gaps", "--topic", TOPIC, _lines(tmp_path, first, third)) == 0
    assert "gap" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"v": 1, "body": {"share": 0.5}}', "line 1: malformed: number 0.5 is not an integer"),
        ("{not json", "line 1: malformed: not valid JSON: Expecting property name enclosed in double quotes"),
    ],
)
def test_malformed_input_exits_2(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, reason: str
) -> None:
    assert _verify(keys, _lines(tmp_path, line)) == 2
    assert capsys.readouterr().out.startswith(reason)


def test_unusable_public_keys_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = x25519.X25519PrivateKey.generate().public_key()
    pem = x.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "x.pem").write_bytes(pem)
    assert main(["verify", "--pubkey", str(tmp_path / "x.pem"), str(tmp_path / "none")]) == 2
    assert "x.pem: is an X25519 public key; device keys are Ed25519" in capsys.readouterr().err
    assert main(["verify", "--pubkey", str(tmp_path / "missing.jwk")]) == 2
    assert "missing.jwk: public key file not found" in capsys.readouterr().err
    (tmp_path / "short.b64").write_text("AAAA\n")
    assert main(["verify", "--pubkey", str(tmp_path / "short.b64")]) == 2
    assert "short.b64: base64 decodes to 3 bytes; a raw Ed25519 key has 32" in capsys.readouterr().err


def test_unreadable_message_file_exits_2(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(keys, str(tmp_path / "nope.jsonl")) == 2
    assert "nope.jsonl: cannot read: No such file or directory" in capsys.readouterr().err


def test_pem_and_raw_base64_public_keys_work_too(keys: Path, tmp_path: Path) -> None:
    public = load_private_key(keys / "device.key").public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    for key in (tmp_path / "k.pem", keys / "device.pub.b64"):
        assert main(["verify", "--pubkey", str(key), "--topic", TOPIC, path]) == 0


def test_real_entry_point_reads_stdin_and_exits_1_for_a_forgery(keys: Path) -> None:
    good = _signer(keys).sign("stats", TOPIC, {"n": 1})
    rogue = Signer("lobby-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore())
    forged = rogue.sign("stats", TOPIC, {})
    forged["kid"] = good["kid"]
    stdin = encode(good).decode() + "\n" + json.dumps(forged) + "\n"
    run = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "--pubkey", str(keys / "device.pub.jwk"), "--topic", TOPIC],
        input=stdin, capture_output=True, text=True, check=False, timeout=60,
    )
    assert run.returncode == 1
    assert run.stdout.startswith("line 2: rejected [dev lobby-1 boot 1 seq 1]: signature does not verify")
    assert "2 message(s): 1 ok, 1 rejected" in run.stderr


def test_state_file_catches_a_replay_in_a_later_run_and_keeps_rotated_keys(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys)
    first = signer.sign("stats", TOPIC, {"n": 1})
    rotation = signer.rotate(Ed25519PrivateKey.generate(), "emotion-agent/lobby-1/keys")
    state = str(tmp_path / "receiver.json")
    assert _verify(keys, "--state", state, _lines(tmp_path, first, rotation)) == 0
    assert "is now trusted for device lobby-1" in capsys.readouterr().out
    later = signer.sign("stats", TOPIC, {"n": 2})  # signed by the rotated-in key
    assert _verify(keys, "--state", state, "--allow-gaps", _lines(tmp_path, first, later)) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("line 1: rejected [dev lobby-1 boot 1 seq 1]: out of order: seq 1 (boot 1)")
    saved = json.loads(Path(state).read_text())
    assert sorted(s["seq"] for s in saved["streams"]) == [2, 3]


def test_corrupt_state_file_exits_2(keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state.json").write_text('{"version": 1, "rotated_keys": [], "owners": {}, "streams": 5}')
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    assert _verify(keys, "--state", str(tmp_path / "state.json"), path) == 2
    assert "state.json: not a verifier state file (TypeError:" in capsys.readouterr().err


def test_missing_key_exits_2_and_names_the_credentials_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.chdir(tmp_path)
    assert main(["pubkey", "--key", "device.key"]) == 2
    assert capsys.readouterr().err == (
        f"emotion-agent: error: device.key: device private key not found (nor in $CREDENTIALS_DIRECTORY "
        f"{tmp_path / 'creds'}); create one with `emotion-agent keygen --out DIR`\n"
    )


def test_state_file_in_a_missing_folder_exits_2_before_reading_any_message(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "nonexistent/dir/state.json"
    path = _lines(tmp_path, "not json")  # read, it would print a line
    assert _verify(keys, "--state", str(state), path) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"emotion-agent: error: {state}: cannot write the verifier state: "
        f"folder {state.parent} does not exist\n"
    )


def test_state_file_that_cannot_be_written_exits_2_naming_it(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder exists but the file cannot be replaced (a folder is in the way of NAME.tmp);
    chmod would not stop root, which the tests may run as."""
    state = tmp_path / "state.json"
    (tmp_path / "state.json.tmp").mkdir()
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    assert _verify(keys, "--state", str(state), path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emotion-agent: error: {state}: cannot write the verifier state: ")
    assert err.count("\n") == 1
    assert not state.exists()


@pytest.mark.parametrize(("make", "kind"), [(Path.mkdir, "a folder"), (os.mkfifo, "a FIFO (named pipe)")])
def test_state_file_that_cannot_be_read_exits_2_naming_it(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, kind: str
) -> None:
    """A folder is unreadable even as root. A FIFO hung the command for ever (and /dev/zero was
    read until the machine ran out of memory)."""
    state = tmp_path / "state.json"
    make(state)
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    assert _verify(keys, "--state", str(state), path) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"emotion-agent: error: {state}: the verifier state must be a regular file, not {kind}\n"
    )


def test_with_several_files_each_line_is_named_by_its_file_and_its_line_there(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor verifies a recording rotated into several files (feed.jsonl.1 feed.jsonl):
    the numbers ran on across the files, so "line 4" named a line of no file."""
    signer = _signer(keys)
    one, two, three = (signer.sign("stats", TOPIC, {"n": i}) for i in range(3))
    old = tmp_path / "feed.jsonl.1"
    old.write_text(encode(one).decode() + "\n" + encode(two).decode() + "\n\n")
    new = tmp_path / "feed.jsonl"
    new.write_text(encode(three).decode() + "\n" + encode(two).decode() + "\n")
    assert _verify(keys, "--topic", TOPIC, str(old), str(new)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{new}: line 2: rejected [dev lobby-1 boot 1 seq 2]: replay: seq 2 was already accepted "
        f"from (dev lobby-1, kid {one['kid']})"
    ]


def test_a_huge_line_is_refused_without_being_read_whole(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 16 MB payload recorded with ``mosquitto_sub -F %j`` was read into memory whole (34 MB
    at the peak) before its length was refused, while the message said "at most 262144 are
    read" (found by review)."""
    import tracemalloc  # noqa: PLC0415

    signer = _signer(keys)
    first, last = signer.sign("stats", TOPIC, {"n": 1}), signer.sign("stats", TOPIC, {"n": 2})
    path = tmp_path / "feed.jsonl"
    with path.open("wb") as out:
        out.write(encode(first) + b"\n")
        out.write(b'{"topic": "x", "payload": "' + b"A" * (16 << 20) + b'"}\n')
        out.write(encode(last) + b"\n")
    capsys.readouterr()
    tracemalloc.start()
    try:
        code = _verify(keys, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert code == 2
    assert "line 2: malformed: line is longer than 262144 bytes, the most a message may be" in out
    assert "line 3" not in out  # the line after it is read as the next line, and verifies
    assert peak < 4 << 20


def test_an_endless_line_ends_its_input_and_the_next_file_is_read(keys: Path, tmp_path: Path) -> None:
    """``verify /dev/zero`` read zeros until it was killed (found by review): past 2 GiB without
    a line end (more than any MQTT message recorded by ``mosquitto_sub -F %j``) the input is
    given up, said, and the next file is read."""
    good = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {"n": 1}))
    done = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "--pubkey", str(keys / "device.pub.jwk"),
         "--topic", TOPIC, "/dev/zero", good],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "/dev/zero: line 1: malformed: line is longer than 262144 bytes, the most a message may be",
    ]
    assert done.stderr.splitlines() == [
        "verify: /dev/zero: a line longer than 2 GiB without a line end: not a recording of MQTT "
        "messages, the rest of it is not read",
        "verify: 2 message(s): 1 ok, 0 rejected, 1 malformed; 0 gap(s), 0 missing",
    ]


@pytest.mark.parametrize("boot", ["true", '"1"', "-1"])
def test_a_state_file_with_a_boot_that_is_not_a_count_is_refused(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], boot: str
) -> None:
    """``int()`` took ``true`` and ``"1"`` as boot 1, and -1 passed (found by review): a hand-edited or
    damaged state file was read as something it does not say."""
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "owners": {}, "rotated_keys": [], '
                     f'"streams": [{{"dev": "lobby-1", "kid": "k", "boot": {boot}, "seq": 3}}]}}')
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    assert _verify(keys, "--state", str(state), path) == 2
    err = capsys.readouterr().err
    assert "not a verifier state file" in err
    assert "boot and seq must be non-negative integers" in err


@pytest.mark.parametrize(
    "case",
    [
        ("--topic", "emotion-agent/#/x", "'#' must be a whole level, and the last one"),
        ("--topic", "emotion-agent/a+/stats", "'+' must be a whole level"),
        ("--topic", "", "empty: give a topic or a filter"),
        ("--device", "TEST 1!", "is not a device id: 1-63 lower-case letters"),
    ],
)
def test_a_bad_topic_or_device_is_exit_2_not_a_verdict(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str, str]
) -> None:
    """``--topic emotion-agent/#/x`` acted as ``emotion-agent/#`` (every message passed, a weaker
    check than asked for); an empty topic or an impossible device id rejected every message."""
    option, value, said = case
    path = _lines(tmp_path, _signer(keys).sign("stats", TOPIC, {}))
    with pytest.raises(SystemExit) as info:
        _verify(keys, option, value, path)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err, err
    assert said in err, err
