"""Key rotations recorded in the audit log, and which keys a verifier may follow through them.

``emotion-agent keys rotate`` appends a ``key_event`` entry ``{"event": "rotation", "kid":
<old kid>, "new_kid": ..., "old_key": <old x>, "new_key": <new x>}`` (``x`` as in the RFC 8037
JWK) while the old key still signs, then the log is reopened with the new key. So the entry is
committed to by a checkpoint of each key: one the old key signed and one the new key signed,
both at a tree size past the entry. A verifier that trusts one of the two keys trusts the other
once a checkpoint signed by the trusted key covers the entry (forward: the old key announced
its successor; backward: the new key attested its predecessor). That the checkpoint's root is
the root of the entries, the rotation entry included, is checked by the verifier as for every
checkpoint: an inserted or altered rotation entry breaks it. Pure logic over bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.entries import decode_entry
from agent.audit.note import NoteError, open_checkpoint
from agent.audit.store import iter_lines
from agent.crypto.canonical import b64url_decode, b64url_encode
from agent.crypto.keys import kid_for, raw_public
from agent.errors import PayloadError

ROTATION = "rotation"
_MARK = b'"event":"rotation"'


@dataclass(frozen=True)
class Rotation:
    """One recorded rotation: entry ``index`` announced ``new`` as the successor of ``old``."""

    index: int
    old: Ed25519PublicKey
    new: Ed25519PublicKey

    @property
    def old_kid(self) -> str:
        return kid_for(self.old)

    @property
    def new_kid(self) -> str:
        return kid_for(self.new)


def rotation_fields(old: Ed25519PublicKey, new: Ed25519PublicKey) -> dict[str, str]:
    """The ``key_event`` data the rotation command appends."""
    return {
        "event": ROTATION,
        "kid": kid_for(old),
        "new_kid": kid_for(new),
        "old_key": b64url_encode(raw_public(old)),
        "new_key": b64url_encode(raw_public(new)),
    }


def _key(x: str, kid: str, where: str) -> Ed25519PublicKey:
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(x, where, 32))
    if kid_for(key) != kid:
        raise PayloadError(f"{where}: the key's thumbprint is {kid_for(key)}, but the entry names {kid}")
    return key


def find_rotations(segments: Sequence[tuple[int, Path]]) -> tuple[list[Rotation], list[str]]:
    """Every rotation entry in the segments, and a problem for each one that is inconsistent
    (a key that is not the kid it names). Unreadable files and lines are left to the verifier."""
    found: list[Rotation] = []
    problems: list[str] = []
    for _first, path in segments:
        try:
            lines = list(iter_lines(path))
        except OSError:
            continue
        for line in lines:
            if _MARK not in line:
                continue
            try:
                entry = decode_entry(line)
            except PayloadError:
                continue
            data = entry.data
            if entry.kind != "key_event" or data.get("event") != ROTATION:
                continue
            where = f"{path.name} entry {entry.index}"
            try:
                old = _key(data["old_key"], data["kid"], f"{where}: old_key")
                new = _key(data["new_key"], data["new_kid"], f"{where}: new_key")
            except PayloadError as exc:
                problems.append(f"{where}: key rotation refused: {exc}")
                continue
            found.append(Rotation(entry.index, old, new))
    return found, problems


def _largest_signed(notes: Sequence[bytes], key: Ed25519PublicKey) -> int:
    """The largest tree size among the notes that ``key`` signed (0 if none)."""
    best = 0
    for note in notes:
        try:
            best = max(best, open_checkpoint(note, [key]).size)
        except NoteError:
            continue
    return best


def follow_rotations(
    keys: Iterable[Ed25519PublicKey], notes: Sequence[bytes], rotations: Sequence[Rotation]
) -> tuple[list[Ed25519PublicKey], list[str]]:
    """The trusted keys plus every key a rotation links to them, and what was followed.

    A rotation is followed from a trusted key to the other one only when a checkpoint signed by
    the trusted key covers the rotation entry (its tree size is larger than the entry's index)."""
    trusted = {kid_for(k): k for k in keys}
    covered: dict[str, int] = {}
    followed: list[str] = []

    def covers(key: Ed25519PublicKey, index: int) -> bool:
        kid = kid_for(key)
        if kid not in covered:
            covered[kid] = _largest_signed(notes, key)
        return covered[kid] > index

    changed = True
    while changed:
        changed = False
        for r in rotations:
            if r.old_kid in trusted and r.new_kid not in trusted and covers(r.old, r.index):
                trusted[r.new_kid] = r.new
                followed.append(f"entry {r.index}: rotation {r.old_kid} -> {r.new_kid} followed forward")
                changed = True
            elif r.new_kid in trusted and r.old_kid not in trusted and covers(r.new, r.index):
                trusted[r.old_kid] = r.old
                followed.append(f"entry {r.index}: rotation {r.old_kid} -> {r.new_kid} followed back")
                changed = True
    return list(trusted.values()), followed
