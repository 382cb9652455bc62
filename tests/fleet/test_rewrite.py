"""A log rewritten after a witness cosigned it is caught by the witness and by ``audit verify``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.cosignature import cosigner_vkey
from agent.audit.cosigned import COSIGNATURES_FILE, CosignatureInbox
from agent.crypto import MemorySequenceStore, Signer
from agent.fleet.inbox import Delivery
from agent.fleet.receiver import Receiver
from agent.fleet.registry import Registry
from agent.fleet.store import Store
from agent.fleet.witness import Witness
from tests.fleet.sim import SimDevice

NOW = 1_800_000_000_000


def _audit_verify(audit_dir: Path, jwk: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "audit", "verify", str(audit_dir), "--pubkey", str(jwk), *extra],
        capture_output=True, text=True, check=False, timeout=120,
    )


def test_a_rewritten_log_is_caught_by_the_witness_and_by_audit_verify(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    wkey = Ed25519PrivateKey.generate()
    sent: list[tuple[str, bytes]] = []
    registry = Registry(store, trust_first_seen=False, max_skew_s=300)
    rx = Receiver(
        "rx-1", store, registry, witness=Witness(store, "witness.test", wkey),
        signer=Signer("rx-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore()),
        publish=lambda t, p, r: sent.append((t, p)), now_ms=lambda: NOW,
    )
    dev = SimDevice("lobby-1", tmp_path / "device")
    jwk = dev.jwk_file(tmp_path / "keys")
    registry.provision(tmp_path / "keys", NOW)
    for w in range(5):
        rx.handle(Delivery(*dev.window(60 * w), NOW, lambda: None))
    rx.handle(Delivery(*dev.checkpoint(), NOW, lambda: None))
    cosigned = [p for t, p in sent if t.endswith("/audit/cosignature")]
    assert len(cosigned) == 1

    # The device keeps what the witness sent back; nothing else.
    inbox = CosignatureInbox(dev.folder / "audit", dev.key.public_key())
    assert inbox.accept(cosigned[0]) is True
    assert inbox.accept(cosigned[0]) is False  # kept once
    stranger = SimDevice("lobby-1", tmp_path / "stranger")
    assert inbox.accept(stranger.audit.checkpoint().note) is False  # another key's note
    vkey = cosigner_vkey("witness.test", wkey.public_key())
    ok = _audit_verify(dev.folder / "audit", jwk, "--witness", vkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cosigned: 1 tree size(s) by witness.test" in ok.stdout
    assert "cosigned none" not in ok.stdout
    other = cosigner_vkey("witness.test", Ed25519PrivateKey.generate().public_key())
    wrong = _audit_verify(dev.folder / "audit", jwk, "--witness", other)
    assert wrong.returncode == 0, wrong.stdout + wrong.stderr  # nothing cosigned by it is no failure...
    assert "cosigned: " not in wrong.stdout
    assert "warning: --witness witness.test (key ID " in wrong.stdout  # ...but it is said
    assert "cosigned none of the 1 external checkpoint(s)" in wrong.stdout

    # Whoever holds the key writes a fresh, self-consistent log in place of the real one.
    receiver_copy = tmp_path / "cosigned-by-receiver.note"
    receiver_copy.write_bytes(cosigned[0])
    forged = SimDevice("lobby-1", tmp_path / "forged", key=dev.key)
    for w in range(9):
        forged.window(7 * w)
    forged_cp = forged.checkpoint()
    assert _audit_verify(forged.folder / "audit", jwk).returncode == 0  # alone, it verifies
    rx.handle(Delivery(*forged_cp, NOW, lambda: None))
    refused = store.query("SELECT kind FROM witness_events WHERE device = 'lobby-1'")
    assert refused, "the witness refused the rewritten log"
    assert refused[0][0] in {"fork", "no_proof"}
    caught = _audit_verify(
        forged.folder / "audit", jwk, "--checkpoints", str(receiver_copy), "--witness", vkey
    )
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "FAIL" in caught.stdout
    assert not (forged.folder / "audit" / COSIGNATURES_FILE).exists()
    store.close()
