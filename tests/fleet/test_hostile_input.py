"""Review: hostile input to the fleet receiver (each test fails on the reviewed code)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.note import sign_checkpoint
from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk
from agent.fleet.store import MAX_REASON_CHARS, Store, sanitise
from tests.fleet.servers import Postgres
from tests.fleet.test_receiver import NOW, Acks, _deliver, _receiver


def _device(tmp_path: Path, name: str = "lobby-1", boot: int = 1,
            key: Ed25519PrivateKey | None = None) -> tuple[Ed25519PrivateKey, Signer, Path]:
    key = key or Ed25519PrivateKey.generate()
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / f"{name}.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    return key, Signer(name, key, store=MemorySequenceStore(boot=boot)), keys


def test_unsigned_payload_with_nul_in_a_key_is_rejected_not_redelivered(postgres: Postgres, tmp_path: Path) -> None:
    """Anyone who can publish: a NUL in a JSON key ends up in the rejection reason, which
    PostgreSQL TEXT cannot hold; handle() raises, the message is never acked (JetStream
    redelivers it for ever) and no rejection is recorded."""
    store = Store(postgres.create("review_nul"))
    try:
        rx, _ = _receiver(store, tmp_path)
        acks = Acks()
        _deliver(rx, "emotion-agent/lobby-1/stats", b'{"\\u0000":9007199254740993}', acks)
        assert acks.count == 1
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 1
    finally:
        store.close()


def test_rejection_reasons_are_escaped_and_capped(store: Store) -> None:
    assert sanitise("key '\x00\ud800\n' bad") == "key '\\x00\\ud800\\n' bad"
    assert len(sanitise("x" * 10_000)) == MAX_REASON_CHARS
    store.reject(payload_sha256="0" * 64, topic="emotion-agent/a\x00/stats", device="a\x00",
                 reason="\x00" * 10_000, received_ms=NOW, receiver="rx-1")
    ((topic, device, reason),) = store.query("SELECT topic, device, reason FROM rejections")
    assert (topic, device) == ("emotion-agent/a\\x00/stats", "a\\x00")
    assert reason.startswith("\\x00\\x00") and len(reason) == MAX_REASON_CHARS
