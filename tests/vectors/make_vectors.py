"""Regenerate tests/vectors/signed-messages.json: `.venv/bin/python tests/vectors/make_vectors.py`.

Ed25519 signatures are deterministic, so the file is reproducible; tests check that the agent
still produces it byte for byte and that independent verifiers accept and reject what it says.
The device key is the RFC 8037 appendix A.1 example key: public, never use it on a device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer, Verifier, encode, public_jwk, signing_input
from agent.crypto.canonical import b64url_decode, b64url_encode

OUT = Path(__file__).with_name("signed-messages.json")
SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # RFC 8037 A.1 "d"
NEW_SEED = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  # bytes 0..31, for the rotation vector
BASE = "emotion-agent/lobby-1"

BODIES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "a typical window of statistics (per-mille shares, ms times)",
        "stats",
        f"{BASE}/stats",
        {
            "window_start_ms": 1699999920000,
            "window_ms": 60000,
            "people": 6,
            "share": {"angry": 0, "disgust": 0, "fear": 0, "happy": 500, "neutral": 333, "sad": 167,
                      "surprise": 0},
        },
    ),
    (
        "literals and integer limits: booleans, null, negatives, ±(2^53-1), empty containers",
        "alert",
        f"{BASE}/alert",
        {
            "raised": True,
            "cleared": False,
            "rule": None,
            "delta": -42,
            "max": 9007199254740991,
            "min": -9007199254740991,
            "zero": 0,
            "empty_object": {},
            "empty_array": [],
            "nested": [[1, [2, [3]]], {"b": 2, "a": 1}],
        },
    ),
    (
        "string escaping and key order by UTF-16 code units (RFC 8785 §3.2.3)",
        "health",
        f"{BASE}/health",
        {
            "\u20ac": "euro sign",
            "\r": "carriage return key",
            "\ufb33": "hebrew letter dalet with dagesh",
            "1": "digit key",
            "\U0001f600": "emoji key (a surrogate pair in UTF-16, sorts before U+FB33)",
            "\u0080": "control character U+0080",
            "\u00f6": "o with umlaut",
            "text": "quote \" backslash \\ slash / tab \t newline \n nul \u0000 unit-sep \u001f del \u007f"
            " line-sep \u2028 bell \u0007 backspace \b formfeed \f",
        },
    ),
]


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(seed, "seed", 32))


def _case(description: str, env: dict[str, Any]) -> dict[str, Any]:
    unsigned = signing_input(env)
    return {
        "description": description,
        "envelope": env,
        "signing_input_utf8": unsigned.decode("utf-8"),
        "signing_input_hex": unsigned.hex(),
        "signature": env["sig"],
        "published_utf8": encode(env).decode("utf-8"),
    }


def _flip_sig_bit(env: dict[str, Any], bit: int) -> dict[str, Any]:
    raw = bytearray(b64url_decode(env["sig"], "sig", 64))
    raw[bit // 8] ^= 1 << (bit % 8)
    return {**env, "sig": b64url_encode(bytes(raw))}


def _negatives(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(description, line) pairs that every verifier must refuse."""
    text = encode(env).decode()
    changed_body = {**env, "body": {**env["body"], "people": 7}}
    no_seq = {k: v for k, v in env.items() if k != "seq"}
    sig = env["sig"]
    return [
        ("one bit of the signature flipped", json.dumps(_flip_sig_bit(env, 200))),
        ("body value changed", json.dumps(changed_body)),
        ("seq changed", json.dumps({**env, "seq": env["seq"] + 1})),
        ("field seq dropped", json.dumps(no_seq)),
        ("field added", json.dumps({**env, "extra": 1})),
        ("a float in the body", text.replace('"people":6', '"people":6.0')),
        ("duplicate key", text.replace('{"body":{', '{"body":{"people":6,', 1)),
        ("signature with padding", json.dumps({**env, "sig": sig + "=="})),
        ("arrived on another topic", json.dumps({"topic": f"{BASE}/alert", "payload": text})),
    ]


def build() -> dict[str, Any]:
    key = _key(SEED)
    signer = Signer("lobby-1", key, store=MemorySequenceStore(boot=3, first_seq=1025),
                    clock=FakeClock(1_700_000_000.123))
    cases = [_case(d, signer.sign(typ, topic, body)) for d, typ, topic, body in BODIES]
    rotation = signer.rotate(_key(NEW_SEED), f"{BASE}/keys")
    cases.append(_case("key rotation: the new key announced, signed by the old one", rotation))
    after = signer.sign("stats", f"{BASE}/stats", {"people": 0})
    cases.append(_case("first message signed by the rotated-in key", after))
    verifier = Verifier([key.public_key()], max_skew_s=None)
    negatives = []
    for description, line in _negatives(cases[0]["envelope"]):
        result = verifier.check_line(line)
        negatives.append({"description": description, "line": line, "status": result.status,
                          "reason": result.reason})
    return {
        "about": "Test vectors for docs/signed-messages.md. Key: RFC 8037 A.1 example (public!).",
        "private_key_seed_b64url": SEED,
        "public_jwk": public_jwk(key.public_key()),
        "rotated_private_key_seed_b64url": NEW_SEED,
        "rotated_public_jwk": public_jwk(_key(NEW_SEED).public_key()),
        "messages": cases,
        "must_reject": negatives,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="ascii")
    sys.stdout.write(f"wrote {OUT}\n")
