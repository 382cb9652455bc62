"""Device identity and signed messages (issue 4). Pure logic: no paho, cv2 or LiteRT.

Public API (stable; other packages import from ``agent.crypto``)::

    load_private_key(path_or_name) -> Ed25519PrivateKey
        # a path, or a bare name looked up in $CREDENTIALS_DIRECTORY first; KeyFileError
        # (exit 2) if missing, mode & 0o077 != 0, encrypted, not PEM, or not Ed25519
    load_public_key(path) -> Ed25519PublicKey      # JWK (RFC 8037), PEM, or raw base64
    generate_keypair(out_dir, stem="device") -> KeyInfo   # STEM.key (0600), STEM.pub.jwk, STEM.pub.b64
    kid_for(public_key) -> str                     # RFC 7638 JWK thumbprint, base64url (43 chars)
    public_jwk(public_key) -> dict                 # {"kty": "OKP", "crv": "Ed25519", "x", "kid"}

    signer = Signer(device_id, key, state_dir, clock)   # each start = boot + 1; thread-safe
    envelope = signer.sign(typ, topic, body)       # dict: v typ dev kid boot seq ts topic body sig
    payload = encode(envelope)                     # bytes to publish (RFC 8785 canonical JSON)
    signer.rotate(new_key, topic) -> dict          # "key-rotation" message signed by the old key
    signer.close()                                 # or use ``with Signer(...) as signer:``
    MessageSigner                                  # Protocol for publishers; MemorySequenceStore for tests

    verifier = Verifier([public_key], expected_topic=None, max_skew_s=300, clock=clock)
    result = verifier.check(raw, arrival_topic=None)    # Result: status ok|rejected|malformed, reason
    verify_stream(lines, verifier) -> Iterator[Result]  # JSON lines: bare envelopes or {"topic", "payload"}

Bodies hold integers only (no floats): a float raises PayloadError naming the field.
The byte-level format is docs/signed-messages.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light (no cryptography), and imported here because the function ``canonical`` shares its
# name with its module: importing the module would otherwise shadow the function.
from agent.crypto.canonical import JSON, canonical, parse_strict

if TYPE_CHECKING:
    from agent.crypto.envelope import KEY_ROTATION, MessageSigner, Signer, encode, signing_input
    from agent.crypto.keys import (
        KeyInfo,
        generate_keypair,
        kid_for,
        load_private_key,
        load_public_key,
        public_jwk,
    )
    from agent.crypto.seqstore import FileSequenceStore, MemorySequenceStore, SequenceStore
    from agent.crypto.verify import Gap, Result, Verifier, topic_matches, verify_stream

__all__ = [
    "JSON",
    "KEY_ROTATION",
    "FileSequenceStore",
    "Gap",
    "KeyInfo",
    "MemorySequenceStore",
    "MessageSigner",
    "Result",
    "SequenceStore",
    "Signer",
    "Verifier",
    "canonical",
    "encode",
    "generate_keypair",
    "kid_for",
    "load_private_key",
    "load_public_key",
    "parse_strict",
    "public_jwk",
    "signing_input",
    "topic_matches",
    "verify_stream",
]

_LAZY = {
    "FileSequenceStore": "agent.crypto.seqstore",
    "Gap": "agent.crypto.verify",
    "KEY_ROTATION": "agent.crypto.envelope",
    "KeyInfo": "agent.crypto.keys",
    "MemorySequenceStore": "agent.crypto.seqstore",
    "MessageSigner": "agent.crypto.envelope",
    "Result": "agent.crypto.verify",
    "SequenceStore": "agent.crypto.seqstore",
    "Signer": "agent.crypto.envelope",
    "Verifier": "agent.crypto.verify",
    "encode": "agent.crypto.envelope",
    "generate_keypair": "agent.crypto.keys",
    "kid_for": "agent.crypto.keys",
    "load_private_key": "agent.crypto.keys",
    "load_public_key": "agent.crypto.keys",
    "public_jwk": "agent.crypto.keys",
    "signing_input": "agent.crypto.envelope",
    "topic_matches": "agent.crypto.verify",
    "verify_stream": "agent.crypto.verify",
}
"""Imported on first use: ``agent.config`` reads ``agent.crypto.settings``, and loading the
signing code (cryptography, about 10 MB resident) there would weigh on every command, ``bench``
included."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
