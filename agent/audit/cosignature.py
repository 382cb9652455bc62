"""C2SP ``tlog-cosignature`` (cosignature/v1, Ed25519): a witness's signature on a checkpoint.

A cosignature line is appended to the checkpoint note::

    — <witness name> base64(key ID || u64 timestamp (big-endian) || Ed25519 signature)

with key ID = SHA-256(name || 0x0A || 0x04 || public key)[:4]. The signed message is
``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint body (its lines up to and
including the final newline, without signature lines). A valid cosignature says: as of that
time, this was the largest consistent tree the witness had seen for that origin.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.audit.note import SIG_PREFIX, NoteError, check_name, raw_public_key

COSIGNATURE_V1 = b"\x04"
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who signed, when (POSIX seconds), and the signature line."""

    name: str
    timestamp: int
    line: str


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + COSIGNATURE_V1 + raw_public_key(public_key))
    return digest.digest()[:4]


def cosigner_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The ``name+hexkeyid+base64(0x04||key)`` verifier key string of signed-note tools."""
    data = base64.b64encode(COSIGNATURE_V1 + raw_public_key(public_key)).decode("ascii")
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{data}"


VKEY_WHERE = "the receiver logs its witness verifier key at start and shows it on its fleet page"


def parse_vkey(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """A ``name+hexkeyid+base64(0x04||key)`` verifier key; ValueError saying what is wrong
    (without the key: the caller names where it came from)."""
    slip = _pasted_wrong(vkey)
    if slip:
        raise ValueError(slip)
    name, _, rest = vkey.partition("+")
    key_hex, _, data = rest.partition("+")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise ValueError(f"the key part after the second '+' is not base64 ({VKEY_WHERE})") from exc
    if not name or len(raw) != 33 or raw[:1] != COSIGNATURE_V1:
        raise ValueError(f"expected NAME+KEYID+BASE64(0x04 || 32-byte Ed25519 key) ({VKEY_WHERE})")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if cosigner_key_id(name, key).hex() != key_hex:
        raise ValueError(f"key ID {key_hex} does not match the name and key (a character changed?)")
    return name, key


def repeated(witnesses: Sequence[tuple[str, Ed25519PublicKey]]) -> tuple[int, int] | None:
    """(first, again): 0-based places of the first witness listed a second time (the same name
    and key), else None. The same name with another key is a witness's new key, not a repeat."""
    seen: dict[tuple[str, bytes], int] = {}
    for i, (name, key) in enumerate(witnesses):
        first = seen.setdefault((name, raw_public_key(key)), i)
        if first != i:
            return first, i
    return None


def described(name: str, key: Ed25519PublicKey) -> str:
    return f"{name} (key ID {cosigner_key_id(name, key).hex()})"


def _pasted_wrong(vkey: str) -> str | None:
    """The slips of a copy and paste, named: spaces or quotes around the key, or another kind
    of key (a device's public key, a key file) where a verifier key belongs."""
    if vkey != vkey.strip():
        return "it has spaces or line breaks before or after the key: remove them"
    quotes = ("'", '"', "`")
    if vkey.startswith(quotes) or vkey.endswith(quotes):
        return "it is wrapped in quotes inside the value: remove them"
    try:  # base64 has '+' too: a raw key may hold one
        bare = len(base64.b64decode(vkey, validate=True)) == 32
    except ValueError:
        bare = False
    if bare:
        return f"this is a bare Ed25519 public key, not a witness verifier key ({VKEY_WHERE})"
    if vkey.endswith((".jwk", ".pem", ".pub", ".key")) or vkey.startswith(("{", "-----")):
        return f"this is a key or key file, not a witness verifier key ({VKEY_WHERE})"
    return None


def note_body(note: bytes) -> bytes:
    """The checkpoint text a note signs: everything before the blank line."""
    text, sep, _ = note.partition(b"\n\n")
    if not sep:
        raise NoteError("a signed note has a blank line between its text and its signatures")
    return text + b"\n"


def signed_message(body: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode("ascii") + b"\n" + body


def cosign(note: bytes, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line (with its newline) for the checkpoint in ``note``."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    sig = key.sign(signed_message(note_body(note), timestamp))
    blob = cosigner_key_id(check_name(name), key.public_key()) + struct.pack(">Q", timestamp) + sig
    return f"{SIG_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def cosigners(note: bytes, most: int = 3) -> list[str]:
    """``name key ID hex`` of the first ``most`` cosignature-shaped lines of ``note``, unverified,
    the name cut to printable ASCII: what a device refusing a note can say it found instead."""
    found: list[str] = []
    _, _, sigs = note.partition(b"\n\n")
    for raw in sigs.decode("utf-8", errors="replace").split("\n"):
        if len(found) == most:
            break
        if not raw.startswith(SIG_PREFIX):
            continue
        name, _, data = raw[len(SIG_PREFIX) :].rpartition(" ")
        try:
            blob = base64.b64decode(data, validate=True)
        except ValueError:
            continue
        if len(blob) == 4 + 8 + 64:
            shown = "".join(c for c in name if c.isascii() and c.isprintable())[:64]
            found.append(f"{shown} key ID {blob[:4].hex()}")
    return found


def find_cosignature(note: bytes, name: str, public_key: Ed25519PublicKey) -> Cosignature | None:
    """The first line of ``note`` that is a valid cosignature by (name, key), else None.

    Lines of other keys are ignored, as signed-note verifiers do. A line with this key's name
    and ID whose signature fails does not hide a valid one after it; when no line verifies and
    such a line exists, NoteError is raised (someone forged or altered it).
    """
    body = note_body(note)
    want = cosigner_key_id(name, public_key)
    prefix = f"{SIG_PREFIX}{name} "
    bad: NoteError | None = None
    for raw in note.decode("utf-8", errors="replace").split("\n"):
        if not raw.startswith(prefix):
            continue
        try:
            blob = base64.b64decode(raw[len(prefix) :], validate=True)
        except ValueError:
            continue
        if len(blob) != 4 + 8 + 64 or blob[:4] != want:
            continue
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        try:
            public_key.verify(blob[12:], signed_message(body, timestamp))
        except InvalidSignature:
            bad = bad or NoteError(f"cosignature by {name} does not verify: altered checkpoint or line")
            continue
        return Cosignature(name, timestamp, raw + "\n")
    if bad is not None:
        raise bad
    return None
