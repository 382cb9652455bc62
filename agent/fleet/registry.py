"""Which keys speak for which device, and the check every message passes before it is stored.

Keys come from provisioned JWK files, from a device's first retained ``key`` message when
``trust_first_seen`` allows it, and from ``key-rotation`` notices signed by a key already
trusted for that device. They live in the shared database, so a key one replica learns is
trusted by all. Ordering is not judged here: the store's (device, boot, seq) key makes
redelivery idempotent, and gaps are read from what was stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.crypto.canonical import b64url_decode, canonical, parse_strict
from agent.crypto.envelope import KEY_ROTATION, signing_input
from agent.crypto.keys import kid_for, public_from_jwk, public_jwk
from agent.crypto.verify import MAX_LINE_BYTES, Rejected, check_shape
from agent.errors import KeyFileError, PayloadError
from agent.fleet.store import Store

DEVICE_ID = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
"""A device id, as ``agent.config`` allows it (a test keeps the two equal; the fleet package does
not import the agent's configuration)."""
REFRESH_EVERY_S = 10.0
"""Looking for a device not (yet) known here reads the keys again at most this often."""
MAX_PAYLOAD_BYTES = MAX_LINE_BYTES
"""Largest signed payload taken, the line size ``emotion-agent verify`` reads (256 KiB)."""

UNSIGNED_BY_DESIGN = ("status",)
"""Device topics that carry plain text (the retained online/offline and last will)."""


@dataclass(frozen=True)
class Accepted:
    env: Mapping[str, Any]
    payload_sha256: str
    note: str = ""
    envelope_sha256: str = ""
    """SHA-256 of the envelope's JCS form: one for every serialisation of the same message."""


@dataclass(frozen=True)
class Refused:
    reason: str
    device: str | None
    payload_sha256: str


def device_of(topic: str, prefix: str = "emotion-agent") -> str | None:
    parts = topic.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == prefix else None


class Registry:
    def __init__(self, store: Store, *, trust_first_seen: bool, max_skew_s: int) -> None:
        self.store = store
        self.trust_first_seen = trust_first_seen
        self.max_skew_s = max_skew_s
        self._cache: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._refreshed = float("-inf")

    def provision(self, keys_dir: Path, now_ms: int) -> int:
        """Load ``<device_id>.jwk`` files; KeyFileError naming a bad one."""
        count = 0
        for path in sorted(keys_dir.glob("*.jwk")):
            if re.fullmatch(DEVICE_ID, path.stem) is None:  # bound in the shared database for good
                raise KeyFileError(
                    f"registry.keys_dir: {path}: the name must be <device id>.jwk, and {path.stem!r} is "
                    "not a device id (lower-case letters, digits and '-', 1-63 characters, not starting "
                    "or ending with '-'); rename it, e.g. keygen's device.pub.jwk to lobby-1.jwk"
                )
            try:
                key = public_from_jwk(json.loads(path.read_text(encoding="utf-8")), str(path))
            except (OSError, ValueError, PayloadError) as exc:
                raise KeyFileError(f"registry.keys_dir: {path}: not a device public key ({exc})") from exc
            owner = self.store.add_key(
                kid_for(key), path.stem, json.dumps(public_jwk(key)), "provisioned", now_ms
            )
            if owner != path.stem:
                raise KeyFileError(
                    f"registry.keys_dir: {path}: key {kid_for(key)} already belongs to {owner!r}"
                )
            count += 1
        return count

    def keys_for(self, device: str) -> list[Ed25519PublicKey]:
        self._refresh()
        return [key for dev, key in self._cache.values() if dev == device]

    def registered(self, device: str | None) -> bool:
        """Is ``device`` a valid device id with a trusted key? Counters are kept per registered
        device only (anything else under one bucket), so that made-up topics cannot grow them.
        A device unknown here reads the keys again, at most every ``REFRESH_EVERY_S``."""
        if device is None or re.fullmatch(DEVICE_ID, device) is None:
            return False
        if any(dev == device for dev, _ in self._cache.values()):
            return True
        if time.monotonic() - self._refreshed >= REFRESH_EVERY_S:
            self._refresh()
        return any(dev == device for dev, _ in self._cache.values())

    def _refresh(self) -> None:
        self._refreshed = time.monotonic()
        for kid, device, jwk in self.store.trusted_keys():
            if kid not in self._cache:
                self._cache[kid] = (device, public_from_jwk(json.loads(jwk), f"stored key {kid}"))

    def _lookup(self, kid: str) -> tuple[str, Ed25519PublicKey] | None:
        if kid not in self._cache:
            self._refresh()
        return self._cache.get(kid)

    def check(self, payload: bytes, topic: str, received_ms: int) -> Accepted | Refused:
        digest = hashlib.sha256(payload).hexdigest()
        device = device_of(topic)
        if len(payload) > MAX_PAYLOAD_BYTES:
            too_big = f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are taken"
            return Refused(too_big, device, digest)
        try:
            env = parse_strict(payload)
            check_shape(env)
            note = self._check(env, topic, received_ms)
        except (PayloadError, Rejected) as exc:
            return Refused(str(exc), device, digest)
        return Accepted(env, digest, note, hashlib.sha256(canonical(env)).hexdigest())

    def _check(self, env: dict[str, Any], topic: str, received_ms: int) -> str:
        if env["topic"] != topic:
            raise Rejected(f"signed for topic {env['topic']!r} but arrived on {topic!r}")
        if device_of(topic) != env["dev"]:
            raise Rejected(f"dev {env['dev']!r} does not own topic {topic!r}")
        if env["ts"] - received_ms > self.max_skew_s * 1000:
            raise Rejected(f"ts {env['ts']} is more than {self.max_skew_s} s ahead of its arrival")
        known = self._lookup(env["kid"])
        note = ""
        if known is None:
            key = self._first_seen(env)
            note = f"key {env['kid']} trusted on first use for {env['dev']}"
        else:
            owner, key = known
            if owner != env["dev"]:
                raise Rejected(f"kid {env['kid']} belongs to device {owner!r}, not {env['dev']!r}")
        try:
            key.verify(b64url_decode(env["sig"], "field 'sig'", 64), signing_input(env))
        except InvalidSignature as exc:
            raise Rejected(f"signature does not verify with key {env['kid']}") from exc
        if known is None:
            self._trust(key, env["dev"], "first-seen", received_ms, first_for_device=True)
        if env["typ"] == KEY_ROTATION:
            note = self._rotate(env, received_ms)
        return note

    def _first_seen(self, env: Mapping[str, Any]) -> Ed25519PublicKey:
        if not (self.trust_first_seen and env["typ"] == "key" and not self.store.device_has_key(env["dev"])):
            raise Rejected(f"unknown kid {env['kid']}: not provisioned nor announced by a verified rotation")
        key = public_from_jwk(env["body"].get("jwk"), "body.jwk")
        if kid_for(key) != env["kid"]:
            raise Rejected("the announced key is not the key that signed the announcement")
        return key

    def _trust(
        self, key: Ed25519PublicKey, device: str, source: str, now_ms: int, *, first_for_device: bool = False
    ) -> None:
        kid = kid_for(key)
        owner = self.store.add_key(
            kid, device, json.dumps(public_jwk(key)), source, now_ms, first_for_device=first_for_device
        )
        if owner is None:  # another replica trusted another first key for it meanwhile
            raise Rejected(f"unknown kid {kid}: {device} already has a key (first use is trusted once)")
        if owner != device:
            raise Rejected(f"kid {kid} already belongs to device {owner!r}")
        self._cache[kid] = (device, key)

    def _rotate(self, env: Mapping[str, Any], now_ms: int) -> str:
        body = env["body"]
        if set(body) != {"new_key"}:
            raise Rejected('a key-rotation body must be exactly {"new_key": <Ed25519 JWK>}')
        new = public_from_jwk(body["new_key"], "body.new_key")
        self._trust(new, env["dev"], f"rotation from {env['kid']}", now_ms)
        return f"key {kid_for(new)} announced by {env['kid']} is now trusted for {env['dev']}"
