"""``state.json``, signed: the log's last head, attested by the device key before each append.

The state is written *before* the line it describes (size and root after the append), so
after a crash the segment holds either exactly the attested entries or one fewer (the line
never reached the disk). Anything else is not the device's doing: more entries than attested
(an entry appended by someone else, which the next checkpoint would otherwise sign into the
log), fewer (a truncated log) or a different root (a replaced entry). The signature covers a
domain-separated text, so it can never be mistaken for a checkpoint note.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.crypto.keys import kid_for

DOMAIN = "emotion-agent audit state v1"


@dataclass(frozen=True, slots=True)
class Head:
    """The tree as the device last attested it."""

    size: int
    root: bytes
    edge: list[bytes]
    segment: str
    segment_count: int


def _text(origin: str, head: Head) -> bytes:
    root = base64.b64encode(head.root).decode("ascii")
    return f"{DOMAIN}\n{origin}\n{head.size}\n{root}\n{head.segment}\n{head.segment_count}\n".encode()


def signed_state(origin: str, head: Head, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The JSON object ``state.json`` holds."""
    return {
        "size": head.size,
        "root": base64.b64encode(head.root).decode("ascii"),
        "edge": [base64.b64encode(h).decode("ascii") for h in head.edge],
        "segment": head.segment,
        "segment_count": head.segment_count,
        "kid": kid_for(key.public_key()),
        "sig": base64.b64encode(key.sign(_text(origin, head))).decode("ascii"),
    }


def _count(value: object) -> int:
    """A JSON integer >= 0; ValueError for anything else (``Infinity``, ``1e999`` and ``7.5``
    are floats: int() raised OverflowError for the first two and cut the third)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count (a whole number >= 0)")
    return value


def read_head(origin: str, state: dict[str, Any], public_key: Ed25519PublicKey) -> Head | None:
    """The attested head, or None for a state written before states were signed or signed by
    another key (the device key was rotated): the log then needs a checkpoint for every entry.

    Raises ValueError (with the reason) for a signature that does not verify or a bad shape."""
    if "sig" not in state or state.get("kid") != kid_for(public_key):
        return None
    try:
        head = Head(
            size=_count(state["size"]),
            root=base64.b64decode(state["root"], validate=True),
            edge=[base64.b64decode(h, validate=True) for h in state["edge"]],
            segment=str(state["segment"]),
            segment_count=_count(state["segment_count"]),
        )
        sig = base64.b64decode(state["sig"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed ({exc.__class__.__name__}: {exc})") from exc
    try:
        public_key.verify(sig, _text(origin, head))
    except InvalidSignature as exc:
        raise ValueError("its signature does not verify with the device key: it was altered") from exc
    return head
