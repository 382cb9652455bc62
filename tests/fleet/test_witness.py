"""The witness cosigns consistent checkpoints in the C2SP format and refuses forks and rollbacks."""

from __future__ import annotations

import base64
import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.fleet.witness as witness_mod
from agent.audit.cosignature import cosign, find_cosignature, note_body
from agent.audit.merkle import consistency_proof, verify_consistency
from agent.audit.note import NoteError, open_checkpoint, sign_checkpoint
from agent.audit.witnessing import read_leaves
from agent.crypto import parse_strict
from agent.fleet.store import Store
from agent.fleet.witness import Verdict, Witness, judge
from tests.fleet.servers import Postgres
from tests.fleet.sim import SimDevice


def _body(payload: bytes) -> dict:
    return parse_strict(payload)["body"]


def _add(w: Witness, dev: SimDevice, payload: bytes, now_ms: int = 1_800_000_000_000) -> Verdict:
    body = _body(payload)
    proof = [base64.b64decode(p) for p in body.get("proof", [])]
    keys = [dev.key.public_key()]
    return w.add(
        dev.name, body["note"].encode(), device_keys=keys, proof_from=body.get("proof_from"), proof=proof,
        now_ms=now_ms,
    )


def test_a_cosignature_verifies_and_names_its_time() -> None:
    dev_key, wkey = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_checkpoint("emotion-agent/d1", 5, b"\x01" * 32, dev_key).note
    cosigned = note + cosign(note, "w.example", wkey, 1_700_000_000).encode()
    found = find_cosignature(cosigned, "w.example", wkey.public_key())
    assert found is not None
    assert found.timestamp == 1_700_000_000
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
    assert v1.kind == "first"
    assert v1.cosigned_note is not None
    dev.window(60)
    v2 = _add(w, dev, dev.checkpoint()[1])
    assert v2.kind == "cosigned", v2.detail
    assert find_cosignature(v2.cosigned_note or b"", "witness.test", wkey.public_key()) is not None
    witnessed = store.query("SELECT size FROM witness")
    assert witnessed[0][0] > 1

    # The same key writes a fresh log (same origin) and proves, honestly, from the witnessed size.
    forged = SimDevice("d1", tmp_path / "forged", key=dev.key)
    for i in range(9):
        forged.window(1000 + i)
    note = forged.audit.checkpoint().note
    cp = open_checkpoint(note, dev.key.public_key())
    old_size = witnessed[0][0]
    leaves = read_leaves(forged.folder / "audit", 0, cp.size)
    assert leaves is not None
    body = {"note": note.decode(), "proof_from": old_size,
            "proof": [base64.b64encode(h).decode() for h in consistency_proof(leaves, old_size)]}
    v3 = _add(w, forged, forged.message("audit/checkpoint", body)[1])
    assert v3.kind == "fork", v3.detail
    assert v3.cosigned_note is None
    assert store.query("SELECT kind FROM witness_events")  # recorded
    assert store.query("SELECT size FROM witness") == witnessed, "a refused checkpoint never moves the head"


def test_judge_rules() -> None:
    key = Ed25519PrivateKey.generate()
    cp = sign_checkpoint("emotion-agent/d", 10, b"\x02" * 32, key)
    assert judge(None, cp, None, [])[0] == "first"
    assert judge((11, b"\x02" * 32), cp, None, [])[0] == "rollback"
    assert judge((10, b"\x02" * 32), cp, None, [])[0] == "cosigned"
    assert judge((10, b"\x03" * 32), cp, None, [])[0] == "fork"
    assert judge((4, b"\x03" * 32), cp, 3, [])[0] == "no_proof"
    assert judge((4, b"\x03" * 32), cp, 4, [b"\x00" * 32])[0] == "fork"
    # signed before the cosigned head's message: a late delivery, not a rollback
    assert judge((11, b"\x02" * 32), cp, None, [], superseded=True)[0] == "stale"


def test_two_replicas_never_cosign_two_different_first_checkpoints_of_one_log(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No head yet: ``SELECT ... FOR UPDATE`` locked no row, both replicas read "no head" and
    both cosigned, on first use, their own side of a split view."""
    url = postgres.create("firstfork")
    a = SimDevice("lobby-1", tmp_path / "a")
    b = SimDevice("lobby-1", tmp_path / "b", key=a.key)  # same key, another log: a split view
    for dev, what in ((a, "honest"), (b, "rewritten")):
        for i in range(3):
            dev.audit.append("error", {"code": "x", "message": f"{what} {i}"})
    notes = [d.audit.checkpoint().note for d in (a, b)]
    stores = [Store(url), Store(url)]
    wkey = Ed25519PrivateKey.generate()  # the replicas share the witness key
    witnesses = [Witness(s, "w.test", wkey) for s in stores]
    barrier, real_judge = threading.Barrier(2, timeout=3), witness_mod.judge

    def judge(head: tuple[int, bytes] | None, *args: Any, **kwargs: Any) -> Any:
        if head is None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # both replicas have read "no head" before either commits
        return real_judge(head, *args, **kwargs)

    monkeypatch.setattr(witness_mod, "judge", judge)
    verdicts: list[str] = []

    def add(i: int) -> None:
        v = witnesses[i].add("lobby-1", notes[i], device_keys=[a.key.public_key()], proof_from=None,
                             proof=[], now_ms=1_800_000_000_000, signed_at=(1, 10))  # either may win
        verdicts.append("cosigned" if v.cosigned_note is not None else v.kind)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert sorted(verdicts) == ["cosigned", "fork"]
        assert len(stores[0].query("SELECT kind FROM witness_events WHERE kind = 'fork'")) == 1
    finally:
        for s in stores:
            s.close()
