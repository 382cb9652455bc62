"""Signed envelopes: every published payload is one plain JSON object with an embedded ``sig``.

    {"v": 1, "typ": "stats", "dev": "lobby-1", "kid": "<RFC 7638 thumbprint>", "boot": 3,
     "seq": 1025, "ts": 1700000000000, "topic": "emotion-agent/lobby-1/stats",
     "body": {...}, "sig": "<base64url Ed25519 signature>"}

``sig`` signs the RFC 8785 canonical bytes of the object without ``sig``; ``encode`` gives
the canonical bytes of the whole envelope, which are the bytes to publish. docs/signed-messages.md
is the byte-for-byte specification.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.clock import Clock, SystemClock
from agent.crypto.canonical import JSON, b64url_encode, canonical, check_value
from agent.crypto.keys import kid_for, public_jwk
from agent.crypto.seqstore import DEFAULT_BLOCK, FileSequenceStore, SequenceStore
from agent.errors import PayloadError

VERSION = 1
FIELDS = ("v", "typ", "dev", "kid", "boot", "seq", "ts", "topic", "body", "sig")
KEY_ROTATION = "key-rotation"

TYP_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}\Z")
DEV_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
KID_RE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
MAX_TOPIC = 256


def check_topic(topic: object, where: str = "topic") -> str:
    """An MQTT topic name a message may be bound to: no wildcards, no NUL, 1..256 chars."""
    if not isinstance(topic, str) or not 1 <= len(topic) <= MAX_TOPIC:
        raise PayloadError(f"{where}: must be a topic name of 1 to {MAX_TOPIC} characters")
    if any(c in topic for c in "+#\x00"):
        raise PayloadError(f"{where}: {topic!r} holds a wildcard or NUL; a message is bound to one topic")
    return topic


def signing_input(envelope: Mapping[str, Any]) -> bytes:
    """The bytes ``sig`` covers: JCS of every member except ``sig``."""
    return canonical({k: v for k, v in envelope.items() if k != "sig"})


def encode(envelope: Mapping[str, Any]) -> bytes:
    """The exact bytes to publish: the canonical form of the whole envelope, ``sig`` included."""
    if "sig" not in envelope:
        raise PayloadError("envelope has no 'sig'; only signed envelopes are published")
    return canonical(envelope)


def rotation_body(new_key: Ed25519PublicKey) -> dict[str, JSON]:
    """The body of a ``key-rotation`` notice: exactly ``{"new_key": <public JWK>}``."""
    return {"new_key": dict(public_jwk(new_key))}


class MessageSigner(Protocol):
    """What publishers depend on; ``Signer`` is the real one."""

    def sign(self, typ: str, topic: str, body: Mapping[str, JSON]) -> dict[str, Any]: ...


class Signer:
    """Signs envelopes with the device key; each Signer start is a new boot.

    Pass ``state_dir`` (persisted boot counter and sequence blocks) or an explicit ``store``
    (``MemorySequenceStore`` in tests). Thread-safe; ``close()`` releases the state folder.
    """

    def __init__(
        self,
        device_id: str,
        key: Ed25519PrivateKey,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        *,
        store: SequenceStore | None = None,
        block: int = DEFAULT_BLOCK,
        floor: tuple[int, int] | None = None,
    ) -> None:
        if not DEV_RE.match(device_id):
            raise PayloadError(f"device id {device_id!r}: lower-case letters, digits and dashes only")
        if (state_dir is None) == (store is None):
            raise ValueError("give exactly one of state_dir or store")
        self.device_id = device_id
        self._key = key
        self._kid = kid_for(key.public_key())
        self._clock = clock or SystemClock()
        self.rebuilt: str | None = None
        """Set when the sequence state was raised to the ``floor`` (see FileSequenceStore)."""
        if store is None:
            assert state_dir is not None  # noqa: S101 - checked just above, for mypy
            store = FileSequenceStore(state_dir, block, floor)
            self.rebuilt = store.rebuilt
        self._store: SequenceStore = store
        self._lock = threading.Lock()

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def boot(self) -> int:
        return self._store.boot

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, typ: str, topic: str, body: Mapping[str, JSON]) -> dict[str, Any]:
        """A signed envelope (a dict; publish ``encode(envelope)``). PayloadError on bad input."""
        if not TYP_RE.match(typ):
            raise PayloadError(f"typ {typ!r}: lower-case letters, digits and dashes, 1 to 64 characters")
        check_topic(topic)
        if not isinstance(body, Mapping):
            raise PayloadError(f"body must be a JSON object (found {type(body).__name__})")
        check_value(body, "body")
        with self._lock:
            envelope: dict[str, Any] = {
                "v": VERSION,
                "typ": typ,
                "dev": self.device_id,
                "kid": self._kid,
                "boot": self._store.boot,
                "seq": self._store.next_seq(),
                "ts": int(self._clock.time() * 1000),
                "topic": topic,
                "body": dict(body),
            }
            envelope["sig"] = b64url_encode(self._key.sign(signing_input(envelope)))
        return envelope

    def rotate(self, new_key: Ed25519PrivateKey, topic: str) -> dict[str, Any]:
        """Announce new_key in a ``key-rotation`` message signed by the current key, then use it.

        Sequence numbering continues (it is never reused for any key).
        """
        announcement = self.sign(KEY_ROTATION, topic, rotation_body(new_key.public_key()))
        with self._lock:
            self._key = new_key
            self._kid = kid_for(new_key.public_key())
        return announcement

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
