"""Sign once, send the same bytes everywhere, and record every publish in the audit log.

The service hands plain integer bodies to ``Publisher.publish``; the Signer wraps them in the
signed envelope (docs/signed-messages.md), every output receives identical bytes, and the audit
log gets ``publish`` (topic, seq, sha256 of the payload) so an auditor can match each message
seen on the broker to the log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.crypto import JSON, MessageSigner, encode
from agent.outputs.base import Message, Output

logger = logging.getLogger(__name__)


class AuditSink(Protocol):
    def append(self, kind: str, fields: Mapping[str, JSON]) -> int: ...


class Publisher:
    """Topics are relative to ``base_topic`` (default ``emotion-agent/<device_id>``)."""

    def __init__(
        self,
        signer: MessageSigner,
        outputs: Sequence[Output],
        base_topic: str,
        audit: AuditSink | None = None,
    ) -> None:
        self.signer = signer
        self.outputs = list(outputs)
        self.base_topic = base_topic.rstrip("/")
        self.audit = audit
        self.sent = 0

    def topic(self, suffix: str) -> str:
        return f"{self.base_topic}/{suffix}"

    def publish(self, suffix: str, body: Mapping[str, JSON], *, retain: bool = False) -> Message:
        """Sign ``body`` for ``<base>/<suffix>`` and hand it to every output."""
        topic = self.topic(suffix)
        typ = suffix.replace("/", "-").replace("_", "-")  # typ allows a-z, 0-9 and dashes
        envelope = self.signer.sign(typ, topic, body)
        message = Message(topic=topic, payload=encode(envelope), retain=retain)
        for output in self.outputs:
            try:
                output.send(message)
            except Exception:  # one broken output must not silence the others
                logger.exception("output failed", extra={"fields": {"topic": topic}})
        if self.audit is not None:
            self.audit.append(
                "publish",
                {
                    "topic": topic,
                    "seq": int(envelope["seq"]),
                    "payload_sha256": hashlib.sha256(message.payload).hexdigest(),
                },
            )
        self.sent += 1
        return message
