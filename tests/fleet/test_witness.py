"""The witness cosigns consistent checkpoints in the C2SP format and refuses forks and rollbacks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.cosignature import cosign, find_cosignature, note_body
from agent.audit.merkle import verify_consistency
from agent.audit.note import NoteError, open_checkpoint
from agent.fleet.store import Store
from agent.fleet.witness import Witness, judge
from agent.crypto import parse_strict
from tests.fleet.sim import SimDevice


def _body(payload: bytes) -> dict:
    return parse_strict(payload)["body"]


def _add(w: Witness, dev: SimDevice, payload: bytes, now_ms: int = 1_800_000_000_000):  # type: ignore[no-untyped-def]
    body = _body(payload)
    return w.add(
        dev.name, body["note"].encode(), device_keys=[dev.key.public_key()], proof_from=body.get("proof_from"),
        proof=[base64.b64decode(p) for p in body.get("proof", [])], now_ms=now_ms,
    )


def test_a_cosignature_verifies_and_names_its_time() -> None:
    dev_key, wkey = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    from agent.audit.note import sign_checkpoint

    note = sign_checkpoint("emotion-agent/d1", 5, b"\x01" * 32, dev_key).note
    cosigned = note + cosign(note, "w.example", wkey, 1_700_000_000).encode()
    found = find_cosignature(cosigned, "w.example", wkey.public_key())
    assert found is not None and found.timestamp == 1_700_000_000
    assert open_checkpoint(cosigned, dev_key.public_key()).size == 5  # still a valid device note
    assert find_cosignature(cosigned, "w.example", Ed25519PrivateKey.generate().public_key()) is None
    altered = cosigned.replace(b"\n5\n", b"\n6\n")
    with pytest.raises(NoteError, match="does not verify"):
        find_cosignature(altered, "w.example", wkey.public_key())
    assert note_body(note).startswith(b"emotion-agent/d1\n5\n")


def test_the_device_publishes_a_proof_from_its_previous_checkpoint(tmp_path: Path) -> None:
    dev = SimDevice("d1", tmp_path)
    first = _body(dev.checkpoint()[1])
    assert "proof" not in first
    for i in range(7):
        dev.window(60 * i)
    second = _body(dev.checkpoint()[1])
    old = open_checkpoint(first["note"].encode(), dev.key.public_key())
    new = open_checkpoint(second["note"].encode(), dev.key.public_key())
    assert second["proof_from"] == old.size
    proof = [base64.b64decode(p) for p in second["proof"]]
    assert verify_consistency(old.size, new.size, old.root, new.root, proof)


def test_witness_cosigns_growth_and_refuses_a_rewritten_log(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    wkey = Ed25519PrivateKey.generate()
    w = Witness(store, "witness.test", wkey)
    dev = SimDevice("d1", tmp_path / "d1")
    dev.window(0)
    v1 = _add(w, dev, dev.checkpoint()[1])
    assert v1.kind == "first" and v1.cosigned_note is not None
    dev.window(60)
    v2 = _add(w, dev, dev.checkpoint()[1])
    assert v2.kind == "cosigned", v2.detail
    assert find_cosignature(v2.cosigned_note or b"", "witness.test", wkey.public_key()) is not None
    witnessed = store.query("SELECT size FROM witness")

    # The same key writes a fresh log (same origin) and proves from the witnessed size.
    forged = SimDevice("d1", tmp_path / "forged", key=dev.key)
    for i in range(6):
        forged.window(1000 + i)
    forged.prover.edge_file.write_text(dev.prover.edge_file.read_text())  # claims the old base
    v3 = _add(w, forged, forged.checkpoint()[1])
    assert v3.refused and v3.kind in {"fork", "no_proof"}, v3.detail
    assert store.query("SELECT kind FROM witness_events")  # recorded
    assert store.query("SELECT size FROM witness") == witnessed, "a refused checkpoint never moves the head"


def test_judge_rules() -> None:
    key = Ed25519PrivateKey.generate()
    from agent.audit.note import sign_checkpoint

    cp = sign_checkpoint("emotion-agent/d", 10, b"\x02" * 32, key)
    assert judge(None, cp, None, [])[0] == "first"
    assert judge((11, b"\x02" * 32), cp, None, [])[0] == "rollback"
    assert judge((10, b"\x02" * 32), cp, None, [])[0] == "cosigned"
    assert judge((10, b"\x03" * 32), cp, None, [])[0] == "fork"
    assert judge((4, b"\x03" * 32), cp, 3, [])[0] == "no_proof"
    assert judge((4, b"\x03" * 32), cp, 4, [b"\x00" * 32])[0] == "fork"
