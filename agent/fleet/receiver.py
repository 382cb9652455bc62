"""One message's way through a receiver: verify, store once, witness, acknowledge.

Nothing unverified is stored as data: a message that fails any check becomes a row in
``rejections`` (its hash, topic and reason), never in ``messages``. The acknowledgement goes
out after the database commit and the witness step, so a replica that dies in between leaves
the message to be delivered again, and the (device, boot, seq) key turns the redelivery into
a no-op for the row; a checkpoint is witnessed again (idempotent).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.audit.note import NoteError
from agent.crypto import JSON, MessageSigner, encode
from agent.crypto.canonical import canonical
from agent.fleet.inbox import Delivery, RetryLater
from agent.fleet.registry import UNSIGNED_BY_DESIGN, Accepted, Registry, device_of
from agent.fleet.rollup import RowKey, stats_problem
from agent.fleet.store import Store, StoredMessage, sanitise
from agent.fleet.witness import Witness
from agent.log_throttle import Throttled

logger = logging.getLogger(__name__)

CHECKPOINT_TYP = "audit-checkpoint"
STATS_TYP = "stats"
Publish = Callable[[str, bytes, bool], None]
UNKNOWN_DEVICE = "unknown"
"""Counter key of messages on the topic of a device that is not registered (or no device)."""


@dataclass
class Metrics:
    """Counters for /metrics; updated from the inbox thread, read from the HTTP thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    verified: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    witness: Counter[tuple[str, str]] = field(default_factory=Counter)
    lag_ms: dict[str, int] = field(default_factory=dict)
    rollup_unreadable: set[RowKey] = field(default_factory=set)
    """Stored stats messages the site rollups leave out (their body cannot be summed)."""
    db_seconds: float = 0.0
    db_calls: int = 0

    def count(self, counter: Counter[str], device: str | None) -> None:
        with self.lock:
            counter[device or "unknown"] += 1


class Receiver:
    def __init__(
        self,
        receiver_id: str,
        store: Store,
        registry: Registry,
        *,
        witness: Witness | None,
        signer: MessageSigner,
        publish: Publish,
        metrics: Metrics | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.receiver_id = receiver_id
        self.store = store
        self.registry = registry
        self.witness = witness
        self.signer = signer
        self.publish = publish
        self.metrics = metrics or Metrics()
        self._now_ms = now_ms
        self._warn = Throttled(logger)  # every rejection is a row; the log says one a minute

    def handle(self, delivery: Delivery) -> None:
        """Decide, commit, then acknowledge. The database being away raises ``RetryLater`` (the
        message stays unacknowledged, to be delivered again); any other failure on the message
        is recorded as a rejection naming the exception's type, and the message acknowledged:
        input that always makes the receiver fail must not be delivered again for ever."""
        try:
            self._handle(delivery)
        except Exception as exc:
            if self.store.transient(exc):
                raise RetryLater(f"database unavailable: {type(exc).__name__}") from exc
            logger.exception("receiver failed on a message", extra={"topic": sanitise(delivery.topic)})
            self._reject(
                hashlib.sha256(delivery.payload).hexdigest(), delivery.topic, device_of(delivery.topic),
                f"receiver error: {type(exc).__name__}", delivery.received_ms,
            )  # if this fails too, the inbox delivers it again, a bounded number of times
            delivery.ack()

    def _handle(self, delivery: Delivery) -> None:
        topic, device = delivery.topic, device_of(delivery.topic)
        if not delivery.payload or topic.rsplit("/", 1)[-1] in UNSIGNED_BY_DESIGN:
            # a cleared retained topic, or status
            self.metrics.count(self.metrics.skipped, self._label(device))
            delivery.ack()
            return
        verdict = self.registry.check(delivery.payload, topic, delivery.received_ms)
        started = time.perf_counter()
        if isinstance(verdict, Accepted):
            self._accept(verdict, delivery)
        else:
            self._reject(verdict.payload_sha256, topic, verdict.device, verdict.reason, delivery.received_ms)
        with self.metrics.lock:
            self.metrics.db_seconds += time.perf_counter() - started
            self.metrics.db_calls += 1
        delivery.ack()

    def _label(self, device: str | None) -> str:
        """The counter key for a device named by a topic: itself if registered, else "unknown"
        (anyone can publish on made-up topics; each must not become a counter of its own)."""
        return device if device is not None and self.registry.registered(device) else UNKNOWN_DEVICE

    def _reject(self, digest: str, topic: str, device: str | None, reason: str, received_ms: int) -> None:
        self.store.reject(
            payload_sha256=digest, topic=topic, device=device, reason=reason, received_ms=received_ms,
            receiver=self.receiver_id,
        )
        self.metrics.count(self.metrics.rejected, self._label(device))
        self._warn.warning(
            "rejected", "message rejected", extra={"topic": sanitise(topic), "reason": sanitise(reason)}
        )

    def _accept(self, ok: Accepted, delivery: Delivery) -> None:
        env: Mapping[str, Any] = ok.env
        problem = stats_problem(env["body"]) if env["typ"] == STATS_TYP else None
        if problem is not None:  # signed, but site rollups could not read it: never stored
            self._reject(ok.payload_sha256, delivery.topic, env["dev"], problem, delivery.received_ms)
            return
        row = StoredMessage(
            env["dev"],
            env["boot"],
            env["seq"],
            env["kid"],
            env["typ"],
            env["topic"],
            env["ts"],
            canonical(env["body"]).decode(),
            ok.payload_sha256,
            delivery.received_ms,
            ok.envelope_sha256,
        )
        outcome = self.store.insert_message(row, self.receiver_id)
        if outcome == "conflict":
            reason = f"replay: seq {env['seq']} of boot {env['boot']} is already stored with other content"
            self._reject(ok.payload_sha256, delivery.topic, env["dev"], reason, delivery.received_ms)
            return
        if outcome == "duplicate":
            self.metrics.count(self.metrics.duplicates, env["dev"])
        else:
            self.metrics.count(self.metrics.verified, env["dev"])
            with self.metrics.lock:
                self.metrics.lag_ms[env["dev"]] = max(0, delivery.received_ms - env["ts"])
        if env["typ"] == CHECKPOINT_TYP and self.witness is not None:
            # A duplicate too: the first delivery may have committed its row and died before (or
            # in) the witness step, and without a cosignature the device's next checkpoint proves
            # from a size the witness never cosigned. Judging it again is idempotent (the same
            # head is cosigned again; one superseded since is stale).
            self._witness(env)

    def _witness(self, env: Mapping[str, Any]) -> None:
        body = env["body"]
        device = str(env["dev"])
        try:
            note = str(body["note"]).encode("utf-8")
            proof_from = body.get("proof_from")
            proof = [base64.b64decode(p, validate=True) for p in body.get("proof", [])]
        except (KeyError, TypeError, ValueError, AttributeError):
            note, proof_from, proof = b"", None, []
        if self.witness is None:
            return
        try:
            verdict = self.witness.add(
                device,
                note,
                device_keys=self.registry.keys_for(device),
                proof_from=proof_from if isinstance(proof_from, int) else None,
                proof=proof,
                now_ms=self._now_ms(),
                signed_at=(int(env["boot"]), int(env["seq"])),
            )
        except NoteError as exc:
            logger.warning("checkpoint unreadable", extra={"device": device, "error": str(exc)})
            return
        with self.metrics.lock:
            self.metrics.witness[(device, verdict.kind)] += 1
        if verdict.cosigned_note is not None:
            self.publish(f"emotion-agent/{device}/audit/cosignature", verdict.cosigned_note, True)
        elif verdict.refused:
            topic = f"emotion-agent-fleet/{self.receiver_id}/alert"
            alert: dict[str, JSON] = {"device": device, "problem": verdict.kind, "detail": verdict.detail}
            self.publish(topic, encode(self.signer.sign("witness-alert", topic, alert)), False)
