"""Simulated devices for the fleet tests: real keys, real signed envelopes, real audit logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditLog
from agent.audit.settings import AuditConfig
from agent.audit.witnessing import CheckpointProver
from agent.clock import SystemClock
from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk


@dataclass
class SimDevice:
    """One device: ``window(i)`` is the signed stats message of window i (published or not)."""

    name: str
    folder: Path
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    boot: int = 1

    def __post_init__(self) -> None:
        self.signer = Signer(self.name, self.key, store=MemorySequenceStore(boot=self.boot))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog.open(
            self.folder / "audit", self.key, f"emotion-agent/{self.name}", SystemClock(),
            AuditConfig(checkpoint_every_entries=1000, checkpoint_every_minutes=1000),
        )
        self.prover = CheckpointProver(self.folder / "audit", self.folder / "checkpoint-edge.json")

    def topic(self, suffix: str) -> str:
        return f"emotion-agent/{self.name}/{suffix}"

    def jwk_file(self, keys_dir: Path) -> Path:
        keys_dir.mkdir(parents=True, exist_ok=True)
        path = keys_dir / f"{self.name}.jwk"
        path.write_text(json.dumps(public_jwk(self.key.public_key())))
        return path

    def message(self, suffix: str, body: dict[str, Any]) -> tuple[str, bytes]:
        topic = self.topic(suffix)
        env = self.signer.sign(suffix.replace("/", "-").replace("_", "-"), topic, body)
        self.audit.append("publish", {"topic": topic, "seq": int(env["seq"]), "payload_sha256": "0" * 64})
        return topic, encode(env)

    def window(self, start: int, people: int | None = 6, length: int = 60) -> tuple[str, bytes]:
        votes = None if people is None else {"happy": people // 2, "neutral": people - people // 2}
        body = {"window_start": start, "window_end": start + length, "people": people, "votes": votes}
        return self.message("stats", body)

    def checkpoint(self) -> tuple[str, bytes]:
        note = self.audit.checkpoint().note
        return self.message("audit/checkpoint", self.prover.body_for(note))
