"""An independent check, written from the C2SP and RFC 9162 texts alone (no agent.audit Merkle
or note code on the checking side): one checkpoint's signature, the root recomputed from the
entry lines, and one inclusion proof produced by the device's code."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.audit.merkle import inclusion_proof, leaf_hash
from agent.audit.note import split_notes
from agent.clock import FakeClock

from .conftest import OpenLog
from .helpers import fill


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1: MTH({}) = SHA-256(), MTH({d0}) = SHA-256(0x00 || d0),
    MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of 2 < n."""
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def rfc9162_verify_inclusion(
    leaf_index: int, tree_size: int, hash_: bytes, path: list[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, the numbered steps."""
    if leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = hash_  # 3
    for p in path:  # 4
        if sn == 0:  # 4a
            return False
        if fn % 2 == 1 or fn == sn:  # 4b
            r = sha256(b"\x01" + p + r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root_hash  # 5


def c2sp_verify_checkpoint(note: bytes, name: str, raw_key: bytes) -> tuple[str, int, bytes]:
    """signed-note + tlog-checkpoint: text, blank line, '— name base64(keyid || sig)' lines;
    key ID = SHA-256(name || 0x0A || 0x01 || key)[:4]; Ed25519 over the text incl. its newline."""
    text_s = note.decode("utf-8")
    cut = text_s.rindex("\n\n")
    text, sigs = text_s[: cut + 1], text_s[cut + 2 :].splitlines()
    want_id = sha256(name.encode() + b"\x0a\x01" + raw_key)[:4]
    public = Ed25519PublicKey.from_public_bytes(raw_key)
    for line in sigs:
        assert line.startswith("\u2014 ")
        signer, b64 = line[2:].split(" ")
        blob = base64.b64decode(b64)
        if signer == name and blob[:4] == want_id:
            public.verify(blob[4:], text.encode())  # raises if forged
            origin, size, root = text.rstrip("\n").split("\n")[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the expected key")


def test_a_checkpoint_and_an_inclusion_proof_check_out_independently(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(segment_max_entries=1000, checkpoint_every_entries=1000)
    fill(log, clock, 7)
    cp = log.checkpoint()
    log.close()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    origin, size, root = c2sp_verify_checkpoint(cp.note, cp.origin, raw)
    lines = (tmp_path / "audit/segment-000000000000.jsonl").read_bytes().splitlines()
    assert origin == "emotion-agent/lobby-1/audit"
    assert size == len(lines) == 23
    assert mth(lines) == root
    index = 11
    proof = inclusion_proof([leaf_hash(x) for x in lines], index)  # the device's code
    leaf = sha256(b"\x00" + lines[index])
    assert rfc9162_verify_inclusion(index, size, leaf, proof, root)
    assert not rfc9162_verify_inclusion(index, size, sha256(b"\x00" + lines[index + 1]), proof, root)
    assert not rfc9162_verify_inclusion(index, size, leaf, proof[:-1], root)


def test_the_c2sp_example_key_id_and_format_match_the_spec() -> None:
    """The spec's own example note: a note's text, blank line, em-dash signature line."""
    example = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
        "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    )
    notes, tail = split_notes(example.encode())
    assert tail == b""
    assert notes == [(1, example.encode())]
    blob = base64.b64decode(example.rsplit(" ", 1)[1])
    assert len(blob) == 4 + 64  # key ID + Ed25519 signature
