"""The JSON value domain of signed messages, its RFC 8785 canonical form, and strict parsing.

Signed objects hold integers only (within ±(2**53 - 1)), strings, booleans, null, arrays and
objects. Floats are refused everywhere, even integral ones such as ``1.0``: JCS number
formatting of floats is where independent implementations disagree. Booleans are JSON
``true``/``false`` and are never read as numbers. Parsing is as strict as signing: duplicate
keys, non-integer number literals, NaN/Infinity and lone surrogates make a message malformed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import rfc8785

from agent.errors import PayloadError

JSON: TypeAlias = bool | int | str | Sequence["JSON"] | Mapping[str, "JSON"] | None
"""A value that may appear in a signed object (no floats)."""

MAX_SAFE_INT = 2**53 - 1
MAX_DEPTH = 32

_B64URL = re.compile(r"^[A-Za-z0-9_-]*\Z")


def check_value(value: object, where: str = "body", depth: int = 0) -> None:
    """Raise PayloadError naming the first value outside the signed-message domain."""
    if depth > MAX_DEPTH:
        raise PayloadError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise PayloadError(
                f"{where}: integer {value} is outside ±(2**53 - 1), the range every JSON reader keeps exact"
            )
        return
    if isinstance(value, float):
        raise PayloadError(
            f"{where}: {value!r} is not an integer; signed messages carry integers only "
            "(shares in per-mille, durations in ms)"
        )
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{where}: object key {key!r} is not a string")
            _check_text(key, f"{where} key")
            check_value(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]", depth + 1)
        return
    raise PayloadError(f"{where}: a {type(value).__name__} cannot appear in a signed message")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{where}: string holds a lone surrogate, which is not valid Unicode") from exc


def canonical(value: Mapping[str, JSON]) -> bytes:
    """The RFC 8785 (JCS) bytes of an object after checking it is integers-only."""
    check_value(value, "message")
    return rfc8785.dumps(value)


def _reject_float(literal: str) -> Any:
    raise PayloadError(
        f"number {literal} is not an integer; signed messages carry integers only"
    )


def _reject_constant(literal: str) -> Any:
    raise PayloadError(f"{literal} is not valid JSON (signed messages carry integers only)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PayloadError(f"duplicate key {key!r} in an object (RFC 8785 needs I-JSON)")
        out[key] = value
    return out


def parse_strict(text: str | bytes) -> Any:
    """Parse JSON as signed messages allow it; PayloadError says what is wrong and where."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"not UTF-8 text (byte {exc.start})") from exc
    try:
        value = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except ValueError as exc:  # an integer literal beyond CPython's 4300-digit limit
        raise PayloadError(f"not valid JSON: {str(exc)[:120]}") from exc
    except RecursionError as exc:
        raise PayloadError("not valid JSON: nested too deeply") from exc
    check_value(value, "message")
    return value


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 4648 §5, RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, where: str, length: int | None = None) -> bytes:
    """Strict base64url: no padding, no other characters, canonical trailing bits, exact length."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise PayloadError(f"{where}: not unpadded base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"{where}: not unpadded base64url text") from exc
    if b64url_encode(data) != text:
        raise PayloadError(f"{where}: non-canonical base64url (unused trailing bits are set)")
    if length is not None and len(data) != length:
        raise PayloadError(f"{where}: decodes to {len(data)} bytes, expected {length}")
    return data
