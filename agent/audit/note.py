"""C2SP ``tlog-checkpoint`` bodies wrapped in C2SP ``signed-note``s with an Ed25519 key.

A checkpoint note, byte for byte::

    <origin>\\n<tree size>\\n<base64 root>\\n\\n— <key name> <base64(key ID || signature)>\\n

The key name is the origin; the key ID is SHA-256(name || 0x0A || 0x01 || public key)[:4];
the signature is Ed25519 over the note text (the three lines, final newline included). Any
tool that speaks these formats (e.g. Go's ``golang.org/x/mod/sumdb/note``) can check them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.audit.merkle import HASH_SIZE

SIG_TYPE_ED25519 = b"\x01"
SIG_PREFIX = "— "  # em dash, space
_NAME = re.compile(r"^[^\s+]+\Z")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})\Z")


class NoteError(ValueError):
    """A note or checkpoint is malformed or its signature does not verify."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified (or freshly signed) tree head and the exact note bytes."""

    origin: str
    size: int
    root: bytes
    note: bytes

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.root).decode("ascii")


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The signed-note key ID: first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + SIG_TYPE_ED25519 + raw_public_key(public_key)
    ).digest()
    return digest[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The ``name+hexkeyid+base64(0x01||key)`` string Go's note package reads."""
    data = base64.b64encode(SIG_TYPE_ED25519 + raw_public_key(public_key)).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{data}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise NoteError(f"key name / origin {name!r} must be non-empty, without spaces or '+'")
    return name


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    if len(root) != HASH_SIZE:
        raise NoteError("a checkpoint root must be a 32-byte SHA-256 hash")
    return f"{check_name(origin)}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, key: Ed25519PrivateKey) -> SignedCheckpoint:
    """Sign a tree head as a checkpoint note, the key name being the origin."""
    text = checkpoint_text(origin, size, root)
    sig = key.sign(text.encode("utf-8"))
    kid = key_id(origin, key.public_key())
    line = f"{SIG_PREFIX}{origin} {base64.b64encode(kid + sig).decode('ascii')}\n"
    note = (text + "\n" + line).encode("utf-8")
    return SignedCheckpoint(origin, size, root, note)


def strict_b64decode(text: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling (no malleable spare bits)."""
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError(f"{text[:16]}… is not canonical base64")
    return data


def _split_note(note: bytes) -> tuple[str, list[str]]:
    try:
        s = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("note is not valid UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in s):
        raise NoteError("note contains a control character other than newline")
    cut = s.rfind("\n\n")
    if cut < 0 or not s.endswith("\n"):
        raise NoteError("note has no blank line before its signatures or does not end in a newline")
    text, sig_block = s[: cut + 1], s[cut + 2 :]
    lines = sig_block[:-1].split("\n")
    if not lines or not all(line.startswith(SIG_PREFIX) for line in lines):
        raise NoteError("every line after the blank line must be a signature starting with '— '")
    return text, lines


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    """Origin, size and root of a tlog-checkpoint body; extension lines are ignored."""
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise NoteError("checkpoint text needs at least three non-empty lines")
    origin, size_s, root_s = lines[:3]
    if not _SIZE.match(size_s):
        raise NoteError(f"checkpoint tree size {size_s!r} is not a decimal without leading zeros")
    try:
        root = strict_b64decode(root_s)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"checkpoint root {root_s!r} is not base64") from exc
    if len(root) != HASH_SIZE:
        raise NoteError(f"checkpoint root decodes to {len(root)} bytes, expected 32")
    return origin, int(size_s), root


def checkpoint_origin(note: bytes) -> str:
    """The origin line of a well-formed note, its signatures unchecked (NoteError otherwise):
    to say whose log a note that does not verify belongs to."""
    return parse_checkpoint_text(_split_note(note)[0])[0]


def open_checkpoint(
    note: bytes, keys: Ed25519PublicKey | Sequence[Ed25519PublicKey], name: str | None = None
) -> SignedCheckpoint:
    """Verify a checkpoint note signed by one of ``keys`` under ``name`` (default: its origin).
    Several keys let an auditor check a log that spans a key rotation."""
    trusted = [keys] if isinstance(keys, Ed25519PublicKey) else list(keys)
    text, sig_lines = _split_note(note)
    origin, size, root = parse_checkpoint_text(text)
    name = origin if name is None else name
    wanted = {key_id(name, k): k for k in trusted}
    for line in sig_lines:
        signer, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        try:
            blob = strict_b64decode(b64)
        except (binascii.Error, ValueError) as exc:
            raise NoteError(f"signature of {signer!r} is not base64") from exc
        key = wanted.get(blob[:4])
        if signer != name or key is None:
            continue  # an unknown key: ignored, as the spec requires
        try:
            key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise NoteError(f"the signature by {name} (key ID {blob[:4].hex()}) does not verify") from exc
        return SignedCheckpoint(origin, size, root, note)
    ids = ", ".join(k.hex() for k in wanted)
    raise NoteError(f"no signature by the trusted key {name} (key ID {ids})")


def split_notes(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Cut concatenated checkpoint notes into (first line number, note); return the partial tail.

    Checkpoint texts contain no blank line, so a note ends after its run of signature lines.
    The data is scanned in place, line ends found with ``find``: a list of its lines cost about
    100 bytes a line, 1 GB of memory for a file of 10 million empty lines.
    """
    notes: list[tuple[int, bytes]] = []
    sig = SIG_PREFIX.encode("utf-8")
    end = data.rfind(b"\n") + 1  # what follows the last newline is the tail
    start, start_line = 0, 1  # where the note being read began
    pos, line = 0, 1
    while pos < end:
        nl = data.find(b"\n", pos, end)
        if nl == pos and pos > start:  # a blank line after text: signatures may follow
            j, after = nl + 1, line + 1
            while j < end and data.startswith(sig, j):
                j, after = data.find(b"\n", j, end) + 1, after + 1
            if j > nl + 1:
                notes.append((start_line, data[start:j]))
                start, start_line = j, after
                pos, line = j, after
                continue
        pos, line = nl + 1, line + 1
    return notes, data[start:]
