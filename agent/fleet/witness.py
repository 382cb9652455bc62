"""The receiver as a witness (C2SP tlog-witness semantics over MQTT/NATS instead of HTTP).

For each device log (its checkpoint origin) the witness keeps the last tree head it cosigned.
A new checkpoint is cosigned only if its signature is the device's and it is consistent with
that head: larger with a valid RFC 9162 proof from exactly that size, or equal with the same
root. Smaller is a rollback, equal size with another root or a failing proof is a fork; both
are refused, recorded and raised, and the stored head does not move. A checkpoint message the
device signed before the head's own message ((boot, seq) lower) is a late delivery of
something already superseded: ``stale``, neither cosigned nor raised, unless it has the head's
size and another root: two roots for one size, both signed by the device, are a fork whenever
they were signed. A tree size above ``MAX_TREE_SIZE`` (2**63-1) is a ``bad_note``. The head is persisted
(committed) before the cosignature is returned, so a crash can never cosign two forks, and
read and written under a lock on the log (PostgreSQL: an advisory lock, taken also for a log's
first checkpoint), so two replicas never cosign two forks either.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.audit.cosignature import cosign, cosigner_vkey
from agent.audit.merkle import verify_consistency
from agent.audit.note import NoteError, SignedCheckpoint, open_checkpoint
from agent.fleet.store import LOCK_WITNESS, Store

logger = logging.getLogger(__name__)

MAX_TREE_SIZE = 2**63 - 1
"""Largest tree size the witness takes: C2SP checkpoint sizes are uint64, but the database keeps
sizes in a signed 64-bit column (PostgreSQL BIGINT, SQLite INTEGER); a larger one is a
``bad_note`` (no audit log grows to 2**63 entries)."""

Kind = Literal["cosigned", "first", "stale", "fork", "rollback", "no_proof", "bad_note"]
REFUSED: frozenset[str] = frozenset({"fork", "rollback", "no_proof", "bad_note"})
NOT_COSIGNED: frozenset[str] = REFUSED | {"stale"}


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    detail: str
    cosigned_note: bytes | None = None

    @property
    def refused(self) -> bool:
        return self.kind in REFUSED


def judge(  # noqa: PLR0911 - one return per rule of the witness
    head: tuple[int, bytes] | None,
    cp: SignedCheckpoint,
    proof_from: int | None,
    proof: Sequence[bytes],
    *,
    superseded: bool = False,
) -> tuple[Kind, str]:
    """Pure rule: may ``cp`` follow the cosigned ``head`` (size, root)?"""
    if head is None:
        return "first", f"first checkpoint seen for {cp.origin}: size {cp.size} (trusted on first use)"
    size, root = head
    if cp.size == size and cp.root != root:  # signed by the device: a fork, whenever it was signed
        return "fork", f"size {size} with a root other than the cosigned one"
    if superseded:
        return "stale", f"size {cp.size} was signed before the cosigned size {size}: a late delivery"
    if cp.size < size:
        return "rollback", f"size {cp.size} is smaller than the cosigned size {size}"
    if cp.size == size:
        if cp.root == root:
            return "cosigned", f"size {size} seen again with the same root"
        return "fork", f"size {size} with a root other than the cosigned one"
    if proof_from != size:
        return "no_proof", f"needs a consistency proof from the cosigned size {size} (got {proof_from})"
    if not verify_consistency(size, cp.size, root, cp.root, proof):
        return "fork", f"consistency proof from {size} to {cp.size} does not verify: the log was rewritten"
    return "cosigned", f"consistent from {size} to {cp.size}"


class Witness:
    """Checks and cosigns device checkpoints; state in the shared database."""

    def __init__(self, store: Store, name: str, key: Ed25519PrivateKey) -> None:
        self.store = store
        self.name = name
        self.key = key

    @property
    def vkey(self) -> str:
        """The verifier key (``NAME+KEYID+BASE64``) devices' ``audit.witnesses`` and ``audit verify
        --witness`` take: logged at start and shown on the fleet page, so nobody has to derive it."""
        return cosigner_vkey(self.name, self.key.public_key())

    def add(
        self,
        device: str,
        note: bytes,
        *,
        device_keys: Sequence[Ed25519PublicKey],
        proof_from: int | None,
        proof: Sequence[bytes],
        now_ms: int,
        signed_at: tuple[int, int] = (0, 0),
    ) -> Verdict:
        """``signed_at`` is the (boot, seq) of the message that carried the checkpoint."""
        origin = f"emotion-agent/{device}"
        try:
            cp = open_checkpoint(note, list(device_keys))
        except NoteError as exc:
            return self._record(origin, device, note, ("bad_note", str(exc)), now_ms)
        if cp.origin != origin:
            wrong = f"origin {cp.origin!r} is not {origin!r}"
            return self._record(origin, device, note, ("bad_note", wrong), now_ms)
        if cp.size > MAX_TREE_SIZE:
            big = f"tree size {cp.size} is above {MAX_TREE_SIZE}, the largest the witness stores"
            return self._record(origin, device, note, ("bad_note", big), now_ms)
        with self.store.transaction() as cur:
            # Locks the log's first checkpoint too, which has no row to lock: two replicas would
            # both read "no head" and cosign two different first checkpoints (a fork).
            self.store.lock(cur, LOCK_WITNESS, origin)
            self.store.execute(cur, "SELECT size, root, boot, seq FROM witness WHERE origin = ?", (origin,))
            row = cur.fetchone()
            head = (int(row[0]), base64.b64decode(row[1])) if row is not None else None
            superseded = row is not None and signed_at < (int(row[2]), int(row[3]))
            kind, detail = judge(head, cp, proof_from, proof, superseded=superseded)
            if kind in NOT_COSIGNED:
                cosigned = None
            else:
                self.store.execute(
                    cur,
                    "INSERT INTO witness (origin, device, size, root, note, cosigned_ms, boot, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                    "note = excluded.note, cosigned_ms = excluded.cosigned_ms, boot = excluded.boot, "
                    "seq = excluded.seq",
                    (origin, device, cp.size, cp.root_b64, note.decode(), now_ms, *signed_at),
                )
                cosigned = note + cosign(note, self.name, self.key, now_ms // 1000).encode("utf-8")
        if kind in REFUSED:
            return self._record(origin, device, note, (kind, detail), now_ms)
        if kind == "stale":
            return Verdict(kind, detail)
        return Verdict(kind, detail, cosigned)

    def _record(
        self, origin: str, device: str, note: bytes, verdict: tuple[Kind, str], now_ms: int
    ) -> Verdict:
        kind, detail = verdict
        logger.error("witness refused a checkpoint", extra={"device": device, "kind": kind, "detail": detail})
        with self.store.transaction() as cur:
            self.store.execute(
                cur,
                "INSERT INTO witness_events (origin, note_sha256, device, kind, detail, at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin, note_sha256) DO NOTHING",
                (origin, hashlib.sha256(note).hexdigest(), device, kind, detail, now_ms),
            )
        return Verdict(kind, detail)
