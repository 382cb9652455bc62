"""An independent verifier written from docs/signed-messages.md alone (no import from ``agent``).

It canonicalizes by hand (no rfc8785 package) and checks signatures with ``cryptography``.
Usage: ``python independent_verifier.py JWK_JSON < lines`` prints ``ok`` or ``bad: why`` per line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MEMBERS = {"v", "typ", "dev", "kid", "boot", "seq", "ts", "topic", "body", "sig"}
LIMIT = 2**53 - 1
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class Bad(Exception):
    pass


def b64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise Bad("bad base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise Bad("non-canonical base64url")
    return data


def jcs_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in SHORT_ESCAPES:
            out.append(SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def jcs(value: Any) -> str:  # noqa: PLR0911 - one return per JSON kind reads like the spec
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if abs(value) > LIMIT:
            raise Bad("integer out of range")
        return str(value)
    if isinstance(value, str):
        return jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise Bad(f"value not allowed: {type(value).__name__}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise Bad("duplicate key")
    return dict(pairs)


def _no_float(text: str) -> Any:
    raise Bad(f"non-integer number {text}")


def parse(text: str | bytes) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float,
                          parse_constant=_no_float)
    except ValueError as exc:
        raise Bad(f"not JSON: {exc}") from exc


def thumbprint(x: str) -> str:
    digest = hashlib.sha256(('{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}').encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(line: str, jwk: dict[str, str]) -> None:
    obj = parse(line)
    arrival = None
    if isinstance(obj, dict) and "payload" in obj:
        arrival = obj["topic"]
        obj = parse(obj["payload"]) if isinstance(obj["payload"], str) else obj["payload"]
    if not isinstance(obj, dict) or set(obj) != MEMBERS:
        raise Bad("not exactly the ten envelope members")
    if obj["v"] != 1 or obj["kid"] != thumbprint(jwk["x"]):
        raise Bad("wrong version or kid")
    signed = {k: v for k, v in obj.items() if k != "sig"}
    key = Ed25519PublicKey.from_public_bytes(b64url(jwk["x"]))
    sig = b64url(obj["sig"])
    if len(sig) != 64:
        raise Bad("signature is not 64 bytes")
    try:
        key.verify(sig, jcs(signed).encode("utf-8"))
    except InvalidSignature as exc:
        raise Bad("signature") from exc
    if arrival is not None and arrival != obj["topic"]:
        raise Bad("topic")


def main() -> int:
    jwk = json.loads(sys.argv[1])
    for line in sys.stdin:
        try:
            verify(line, jwk)
            print("ok")
        except Bad as exc:
            print(f"bad: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
