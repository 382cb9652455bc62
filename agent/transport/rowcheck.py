"""Which spooled rows may leave: only this device's own, signed messages.

The spool is a file in ``state_dir``; anything that can write there could queue a message for
any topic (another device's command topic, say) and the sender would publish it with the
device's broker credentials. So before a row goes to the broker it must name a topic under the
device's base topic (no wildcard, no NUL) and, when the device key is known, carry an envelope
that this key signed for exactly that topic, or one of the device's earlier keys that a key
rotation recorded in its audit log links to it (the rotation notice itself, and messages spooled
before the rotation, are signed by the old key). A row that fails is quarantined, never retried.
Pure logic: no paho import.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.crypto.verify import Verifier
from agent.transport.spool_types import SpoolItem


class RowCheck:
    """``check(item)`` is None for a row that may be sent, else the reason it may not."""

    def __init__(
        self,
        base_topic: str,
        device_id: str,
        key: Ed25519PublicKey | None,
        previous_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self._prefix = base_topic.rstrip("/") + "/"
        self._device = device_id
        self._keys = [] if key is None else [key, *previous_keys]

    def check(self, item: SpoolItem) -> str | None:
        topic = item.topic
        if not topic.startswith(self._prefix):
            return f"topic {topic[:200]!r} is not under this device's base topic {self._prefix!r}"
        if any(c in topic for c in "+#\0"):
            return f"topic {topic[:200]!r} holds a wildcard or NUL"
        if not self._keys:
            return None
        verifier = Verifier(self._keys, device=self._device, max_skew_s=None)
        result = verifier.check(item.payload, arrival_topic=topic)
        if not result.ok:
            return f"payload is not this device's signed message for {topic[:200]!r}: {result.reason}"
        return None
