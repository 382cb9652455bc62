"""``audit.witnesses``: with the witnesses' keys the device keeps only copies of its checkpoints
that one of them cosigned. Without them anyone on the broker who sent 3 junk "cosigned" copies
of a new checkpoint first took all its places in ``cosignatures.log``, and the witness's copy
that came after was refused (said in docs/fleet.md as a known gap)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import service as service_module
from agent.audit.cosignature import cosign, cosigner_key_id, cosigner_vkey
from agent.audit.cosigned import COSIGNATURES_FILE, MAX_PER_SIZE, CosignatureInbox
from agent.audit.note import SIG_PREFIX, sign_checkpoint, split_notes
from agent.audit.store import CHECKPOINTS_FILE
from agent.clock import FakeClock
from agent.config import parse_config
from agent.errors import InputError
from tests.test_reload_field import scripted_service
from tests.test_service import write_config

WITNESS = "witness.test"


def _junk(note: bytes, i: int) -> bytes:
    blob = base64.b64encode(i.to_bytes(4, "big") + b"x" * 64).decode()
    return note + f"{SIG_PREFIX}w{i} {blob}\n".encode()


def _setup(tmp_path: Path) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey, bytes]:
    key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_checkpoint("emotion-agent/lobby-1", 7, b"\x07" * 32, key).note
    (tmp_path / CHECKPOINTS_FILE).write_bytes(note)
    return key, witness, note


def refused_witnesses(items: list[str]) -> str:
    """The one problem check-config names for an ``audit.witnesses`` list of ``items``."""
    text = f"schema_version: 1\ndevice_id: d-1\naudit: {{witnesses: {json.dumps(items)}}}\n"
    with pytest.raises(InputError) as info:
        parse_config(text, "c.yaml")
    (problem,) = info.value.problems
    return problem


def test_junk_copies_sent_first_no_longer_crowd_out_the_witness_copy(tmp_path: Path) -> None:
    key, witness, note = _setup(tmp_path)
    inbox = CosignatureInbox(tmp_path, key.public_key(), [(WITNESS, witness.public_key())])
    assert [inbox.accept(_junk(note, i)) for i in range(MAX_PER_SIZE + 2)] == [False] * (MAX_PER_SIZE + 2)
    real = note + cosign(note, WITNESS, witness, 1_800_000_000).encode()
    assert inbox.accept(real) is True
    stored = split_notes((tmp_path / COSIGNATURES_FILE).read_bytes())[0]
    assert [n for _, n in stored] == [real]


def test_without_witnesses_the_junk_takes_every_place(tmp_path: Path) -> None:
    """What the setting is for: the behaviour without it, unchanged."""
    key, witness, note = _setup(tmp_path)
    inbox = CosignatureInbox(tmp_path, key.public_key())
    assert all(inbox.accept(_junk(note, i)) for i in range(MAX_PER_SIZE))
    assert inbox.accept(note + cosign(note, WITNESS, witness, 1_800_000_000).encode()) is False


def test_a_forged_line_under_the_witness_name_and_key_id_is_refused_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, witness, note = _setup(tmp_path)
    inbox = CosignatureInbox(tmp_path, key.public_key(), [(WITNESS, witness.public_key())])
    blob = cosigner_key_id(WITNESS, witness.public_key()) + struct.pack(">Q", 1) + b"\x00" * 64
    forged = note + f"{SIG_PREFIX}{WITNESS} {base64.b64encode(blob).decode()}\n".encode()
    assert inbox.accept(forged) is False
    assert f"its cosignature by {WITNESS} does not verify" in caplog.text
    assert not (tmp_path / COSIGNATURES_FILE).exists()


def test_a_cosignature_by_another_witness_is_not_kept(tmp_path: Path) -> None:
    key, witness, note = _setup(tmp_path)
    inbox = CosignatureInbox(tmp_path, key.public_key(), [(WITNESS, witness.public_key())])
    other = Ed25519PrivateKey.generate()
    assert inbox.accept(note + cosign(note, "other.test", other, 1_800_000_000).encode()) is False


def test_the_config_takes_verifier_keys_and_names_a_bad_one() -> None:
    witness = Ed25519PrivateKey.generate().public_key()
    vkey = cosigner_vkey(WITNESS, witness)
    cfg = parse_config(f"schema_version: 1\ndevice_id: d-1\naudit: {{witnesses: ['{vkey}']}}\n", "c.yaml")
    assert [(n, k.public_bytes_raw()) for n, k in cfg.audit.witness_keys] == [
        (WITNESS, witness.public_bytes_raw())
    ]
    wrong_id = vkey.replace(vkey.split("+")[1], "00000000")
    problem = refused_witnesses([vkey, wrong_id])
    assert problem.startswith("audit.witnesses (c.yaml:"), problem
    assert "item 2" in problem, problem
    assert "key ID 00000000 does not match the name and key" in problem, problem


def test_the_service_hands_the_configured_witnesses_and_its_log_origin_to_its_inbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = Ed25519PrivateKey.generate()
    vkey = cosigner_vkey(WITNESS, witness.public_key())
    path = write_config(tmp_path, "scripted.mp4", extra=f"audit: {{witnesses: ['{vkey}']}}\n")
    handed: list[object] = []

    def capture(*args: object, on_cosignature: object, **kwargs: object) -> list[object]:
        handed.append(on_cosignature)
        return []

    monkeypatch.setattr(service_module, "build_outputs", capture)
    service = scripted_service(path, FakeClock(1_800_000_000.0), frames=1)
    try:
        (accept,) = handed
        inbox = accept.__self__  # type: ignore[attr-defined]
        assert [(n, k.public_bytes_raw()) for n, k in inbox.witnesses] == [
            (WITNESS, witness.public_key().public_bytes_raw())
        ]
        assert inbox.origin == service.audit.origin == "emotion-agent/test-1"
    finally:
        service.close()


def test_a_witness_listed_with_the_wrong_key_is_named_beside_what_was_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid verifier key of another key (a replica's own key, a renamed witness) passed
    check-config, and every real cosignature was then refused with the words used for junk."""
    key, witness, note = _setup(tmp_path)
    listed = Ed25519PrivateKey.generate().public_key()
    inbox = CosignatureInbox(tmp_path, key.public_key(), [(WITNESS, listed)])
    assert inbox.accept(note + cosign(note, WITNESS, witness, 1_800_000_000).encode()) is False
    real_id = cosigner_key_id(WITNESS, witness.public_key()).hex()
    listed_id = cosigner_key_id(WITNESS, listed).hex()
    said = f"(witness.test key ID {listed_id}); cosignatures found: witness.test key ID {real_id}"
    assert said in caplog.text


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (" {vkey}", "it has spaces or line breaks before or after the key"),
        ("{vkey}\n", "it has spaces or line breaks before or after the key"),
        ('"{vkey}"', "it is wrapped in quotes inside the value"),
        ("{raw}", "this is a bare Ed25519 public key, not a witness verifier key"),
        ("/etc/emotion-agent/witness.pub.jwk", "this is a key or key file, not a witness verifier key"),
        ("{vkey}xyz", "the key part after the second '+' is not base64"),
    ],
)
def test_a_pasted_verifier_key_says_what_slipped_and_shows_all_of_it(value: str, said: str) -> None:
    """The error cut the value to 40 characters: a trailing space or quote, a truncation or a
    pasted log line all showed as the right key, with "not base64" or "key ID does not match"."""
    witness = Ed25519PrivateKey.generate().public_key()
    vkey = cosigner_vkey(WITNESS, witness)
    raw = base64.b64encode(witness.public_bytes_raw()).decode()
    item = value.format(vkey=vkey, raw=raw)
    problem = refused_witnesses([item])
    assert said in problem, problem
    assert repr(item) in problem, problem


def test_a_witness_listed_twice_is_refused_naming_both_items() -> None:
    """The same verifier key twice was taken: harmless on the device, but a slip (a key pasted
    twice, where another witness's was meant) that check-config should name."""
    vkey = cosigner_vkey(WITNESS, Ed25519PrivateKey.generate().public_key())
    other = cosigner_vkey("other.test", Ed25519PrivateKey.generate().public_key())
    problem = refused_witnesses([vkey, other, vkey])
    assert problem.startswith("audit.witnesses (c.yaml:"), problem
    assert "item 3 is item 1 again, witness.test (key ID" in problem, problem
    renamed = cosigner_vkey(WITNESS, Ed25519PrivateKey.generate().public_key())  # a witness's new key
    cfg = parse_config(
        f"schema_version: 1\ndevice_id: d-1\naudit: {{witnesses: ['{vkey}', '{renamed}']}}\n", "c.yaml"
    )
    assert [n for n, _ in cfg.audit.witness_keys] == [WITNESS, WITNESS]


def test_a_note_of_another_log_is_refused_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another device's cosigned checkpoint (a receiver or a hand sending it to the wrong topic)
    was refused as "no signature by the trusted key emotion-agent/lobby-2": this device's key
    named after the other device, as if that device's key were the one expected."""
    key, witness, _ = _setup(tmp_path)
    other = sign_checkpoint("emotion-agent/lobby-2", 7, b"\x07" * 32, Ed25519PrivateKey.generate()).note
    inbox = CosignatureInbox(
        tmp_path, key.public_key(), [(WITNESS, witness.public_key())], origin="emotion-agent/lobby-1"
    )
    assert inbox.accept(other + cosign(other, WITNESS, witness, 1_800_000_000).encode()) is False
    said = ("ignored a cosigned checkpoint of another log: origin 'emotion-agent/lobby-2', "
            "this device's is 'emotion-agent/lobby-1'")
    assert said in caplog.text
    assert "trusted key" not in caplog.text
    assert not (tmp_path / COSIGNATURES_FILE).exists()
