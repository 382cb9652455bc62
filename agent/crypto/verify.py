"""Verification of signed envelopes, for ``emotion-agent verify`` and a facility's own receiver.

A message passes when it is strict integers-only JSON with exactly the envelope fields, its
``kid`` names a trusted key (given, or announced by a verified ``key-rotation``), its Ed25519
signature verifies over the JCS form without ``sig``, it arrived on the topic it was signed
for, its ``ts`` is within the allowed skew, and ``(boot, seq)`` is newer than anything seen
from that ``(dev, kid)``. Sequence gaps inside one boot are reported with the message that
reveals them. Every outcome carries one precise reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.clock import Clock, SystemClock
from agent.crypto.canonical import MAX_SAFE_INT, b64url_decode, check_value, parse_strict
from agent.crypto.envelope import (
    DEV_RE,
    FIELDS,
    KEY_ROTATION,
    KID_RE,
    TYP_RE,
    VERSION,
    check_topic,
    signing_input,
)
from agent.crypto.keys import kid_for, public_from_jwk, public_jwk
from agent.errors import PayloadError

MAX_LINE_BYTES = 256 * 1024
STATE_VERSION = 1
REPLAY_MEMORY = 4096
"""Sequence numbers remembered per stream to tell a replay from a reordering."""

Status = Literal["ok", "rejected", "malformed", "skipped"]

AVAILABILITY = (b"online", b"offline")
"""The only payloads of the unsigned ``status`` topic (the broker itself sends the will)."""

_TST = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?)Z?(?P<offset>Z|[+-]\d\d:?\d\d)?\Z")


class Rejected(Exception):
    """A well-formed message that fails a check; the text is the reason."""


@dataclass(frozen=True)
class Gap:
    """Sequence numbers ``first..last`` of one boot never arrived."""

    dev: str
    kid: str
    boot: int
    first: int
    last: int

    @property
    def missing(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Result:
    """The verdict on one message."""

    status: Status
    reason: str = ""
    envelope: Mapping[str, Any] | None = None
    gaps: tuple[Gap, ...] = ()
    notes: tuple[str, ...] = ()
    topic_checked: bool = False
    retained: bool = False
    """A retained copy replayed by the broker at subscription: checked, but not ordered."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Stream:
    boot: int
    seq: int
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=REPLAY_MEMORY))


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest), as a subscriber sees it.

    A wildcard in the first level never matches a topic starting with ``$`` (MQTT 5.0 4.7.2,
    e.g. ``$SYS/...``); tests compare this with paho's own matcher over a table of cases."""
    pat, parts = pattern.split("/"), topic.split("/")
    if topic.startswith("$") and pat[0] in {"+", "#"}:
        return False
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(pat) == len(parts)


def _field(env: Mapping[str, Any], name: str, kind: type, minimum: int | None = None) -> Any:
    value: Any = env[name]
    if type(value) is not kind:
        raise Rejected(f"field '{name}' must be {'an integer' if kind is int else 'a ' + kind.__name__}")
    if minimum is not None and isinstance(value, int) and value < minimum:
        raise Rejected(f"field '{name}' is {value}; it must be at least {minimum}")
    return value


def check_shape(env: Any) -> None:
    """Rejected naming the first field that is missing, unexpected or of the wrong form."""
    if not isinstance(env, dict):
        raise Rejected("a signed message must be a JSON object")
    missing = [f for f in FIELDS if f not in env]
    if missing:
        raise Rejected(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(env) - set(FIELDS))
    if extra:
        allowed = ", ".join(FIELDS)
        raise Rejected(f"unexpected field(s): {', '.join(extra)}; the envelope has exactly {allowed}")
    if _field(env, "v", int) != VERSION:
        raise Rejected(f"field 'v' is {env['v']}; this verifier reads version {VERSION}")
    for name, pattern in (("typ", TYP_RE), ("dev", DEV_RE), ("kid", KID_RE)):
        if not pattern.match(_field(env, name, str)):
            raise Rejected(f"field '{name}' {env[name]!r} does not match {pattern.pattern}")
    _field(env, "boot", int, 1)
    _field(env, "seq", int, 1)
    _field(env, "ts", int, 0)
    _field(env, "body", dict)
    _field(env, "sig", str)
    try:
        check_topic(_field(env, "topic", str), "field 'topic'")
    except PayloadError as exc:
        raise Rejected(str(exc)) from exc


class Verifier:
    """Checks messages one at a time and remembers what it has accepted (use from one thread).

    ``expected_topic`` may be an MQTT filter (``emotion-agent/+/stats``). ``max_skew_s`` bounds
    how far ``ts`` may be ahead of the reference time (arrival time when known, else the
    clock); ``max_age_s`` (off by default: spooled messages arrive late) bounds how far behind.
    """

    def __init__(
        self,
        keys: Iterable[Ed25519PublicKey],
        *,
        expected_topic: str | None = None,
        device: str | None = None,
        max_skew_s: int | None = 300,
        max_age_s: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {kid_for(k): k for k in keys}
        self._owner: dict[str, str] = {}
        self._rotated: set[str] = set()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self.expected_topic = expected_topic
        self.device = device
        self.max_skew_s = max_skew_s
        self.max_age_s = max_age_s
        self._clock = clock or SystemClock()

    @property
    def trusted_kids(self) -> list[str]:
        return sorted(self._keys)

    def check(
        self,
        message: str | bytes | Mapping[str, Any],
        arrival_topic: str | None = None,
        received_ms: int | None = None,
        *,
        retained: bool = False,
    ) -> Result:
        """Verify one envelope (raw payload bytes/text or an already parsed object).

        ``retained``: the broker's stored copy, delivered at subscription in topic order, not
        publish order. Its signature, key, topic and time are checked; its ``seq`` is neither
        ordered against the live stream nor remembered."""
        try:
            if isinstance(message, str | bytes):
                env = parse_strict(message)
            else:
                check_value(message, "message")
                env = dict(message)
        except PayloadError as exc:
            return Result("malformed", str(exc))
        try:
            check_shape(env)
            self._check_identity(env)
            self._check_signature(env)
            self._check_topic(env, arrival_topic)
            self._check_time(env, received_ms)
            gaps = () if retained else self._check_order(env)
            notes = self._apply_rotation(env)
        except Rejected as exc:
            return Result("rejected", str(exc), env if isinstance(env, dict) else None, retained=retained)
        self._accept(env, ordered=not retained)
        checked = arrival_topic is not None or self.expected_topic is not None
        return Result("ok", "", env, gaps, notes, checked, retained)

    def check_line(self, line: str | bytes) -> Result:
        """One JSON line: a bare envelope, or ``{"topic": T, "payload": P, ...}`` as received.

        P is the envelope object or its text. ``mosquitto_sub -F %j`` lines qualify (not ``%J``:
        it reprints big integers as floats); their ``tst`` (or an integer ``received_ms``) is the
        arrival time for the skew check, and ``retain`` marks the broker's retained copies.
        Messages unsigned by design are skipped (:func:`unsigned_by_design`).
        """
        if len(line) > MAX_LINE_BYTES:
            return Result(
                "malformed", f"line is longer than {MAX_LINE_BYTES} bytes, the most a message may be"
            )
        try:
            obj = parse_strict(line)
        except PayloadError as exc:
            return Result("malformed", str(exc))
        if not isinstance(obj, dict) or "payload" not in obj:
            return self.check(obj) if isinstance(obj, dict) else Result(
                "malformed", "a line must be a JSON object (an envelope or {\"topic\", \"payload\"})"
            )
        return self._check_received(obj)

    def _check_received(self, obj: Mapping[str, Any]) -> Result:
        """A ``{"topic", "payload", ...}`` line."""
        try:
            topic, received = _unwrap(obj)
        except PayloadError as exc:
            return Result("malformed", str(exc))
        payload = obj["payload"]
        why = unsigned_by_design(topic, payload)
        if why is not None:
            return Result("skipped", why, topic_checked=True)
        if not isinstance(payload, dict | str):
            return Result("malformed", "'payload' must be the envelope object or its JSON text")
        return self.check(payload, topic, received, retained=obj.get("retain") in (1, True))

    def _check_identity(self, env: Mapping[str, Any]) -> None:
        if self.device is not None and env["dev"] != self.device:
            raise Rejected(f"dev {env['dev']!r} is not the expected device {self.device!r}")
        if env["kid"] not in self._keys:
            raise Rejected(
                f"{UNKNOWN_KID} {env['kid']}: not a trusted key nor announced by a verified key-rotation"
            )
        owner = self._owner.get(env["kid"])
        if owner is not None and owner != env["dev"]:
            raise Rejected(f"kid {env['kid']} belongs to device {owner!r}, not {env['dev']!r}")

    def _check_signature(self, env: Mapping[str, Any]) -> None:
        try:
            sig = b64url_decode(env["sig"], "field 'sig'", 64)
        except PayloadError as exc:
            raise Rejected(str(exc)) from exc
        try:
            self._keys[env["kid"]].verify(sig, signing_input(env))
        except InvalidSignature as exc:
            raise Rejected(
                f"signature does not verify with key {env['kid']}: the message was altered "
                "or signed by another key"
            ) from exc

    def _check_topic(self, env: Mapping[str, Any], arrival: str | None) -> None:
        if arrival is not None and arrival != env["topic"]:
            raise Rejected(f"signed for topic {env['topic']!r} but arrived on {arrival!r}")
        if self.expected_topic is not None and not topic_matches(self.expected_topic, env["topic"]):
            raise Rejected(f"signed for topic {env['topic']!r}, which is not {self.expected_topic!r}")

    def _check_time(self, env: Mapping[str, Any], received_ms: int | None) -> None:
        now_ms = received_ms if received_ms is not None else int(self._clock.time() * 1000)
        ahead_ms = env["ts"] - now_ms
        if self.max_skew_s is not None and ahead_ms > self.max_skew_s * 1000:
            raise Rejected(
                f"ts {env['ts']} is {ahead_ms / 1000:.3f} s ahead of the reference time "
                f"{now_ms} (max skew {self.max_skew_s} s)"
            )
        if self.max_age_s is not None and -ahead_ms > self.max_age_s * 1000:
            raise Rejected(
                f"ts {env['ts']} is {-ahead_ms / 1000:.3f} s older than the reference time "
                f"{now_ms} (max age {self.max_age_s} s)"
            )

    def _check_order(self, env: Mapping[str, Any]) -> tuple[Gap, ...]:
        dev, kid, boot, seq = env["dev"], env["kid"], env["boot"], env["seq"]
        last = self._streams.get((dev, kid))
        if last is None:
            return ()
        where = f"(dev {dev}, kid {kid})"
        if seq in last.recent:
            raise Rejected(f"replay: seq {seq} was already accepted from {where}")
        if boot < last.boot:
            raise Rejected(f"boot {boot} is older than boot {last.boot} already seen from {where}")
        if seq <= last.seq:
            raise Rejected(
                f"out of order: seq {seq} (boot {boot}) after seq {last.seq} (boot {last.boot}); "
                "sequence numbers only grow, even across boots"
            )
        if boot == last.boot and seq > last.seq + 1:
            return (Gap(dev, kid, boot, last.seq + 1, seq - 1),)
        return ()

    def _apply_rotation(self, env: Mapping[str, Any]) -> tuple[str, ...]:
        if env["typ"] != KEY_ROTATION:
            return ()
        body = env["body"]
        if set(body) != {"new_key"}:
            raise Rejected('a key-rotation body must be exactly {"new_key": <Ed25519 JWK>}')
        try:
            new = public_from_jwk(body["new_key"], "body.new_key")
        except (PayloadError, ValueError) as exc:
            raise Rejected(f"key-rotation: {exc}") from exc
        new_kid = kid_for(new)
        if self._owner.get(new_kid, env["dev"]) != env["dev"]:
            raise Rejected(f"key-rotation: kid {new_kid} already belongs to device {self._owner[new_kid]!r}")
        self._keys[new_kid] = new
        self._owner[new_kid] = env["dev"]
        self._rotated.add(new_kid)
        return (f"key {new_kid} announced by {env['kid']} is now trusted for device {env['dev']}",)

    def export_state(self) -> dict[str, Any]:
        """What a receiver keeps between runs: last (boot, seq) per stream, key owners, rotated keys."""
        return {
            "version": STATE_VERSION,
            "streams": [
                {"dev": dev, "kid": kid, "boot": s.boot, "seq": s.seq}
                for (dev, kid), s in sorted(self._streams.items())
            ],
            "owners": dict(sorted(self._owner.items())),
            "rotated_keys": [public_jwk(self._keys[kid]) for kid in sorted(self._rotated)],
        }

    def import_state(self, data: Any, where: str = "verifier state") -> None:
        """Restore ``export_state()`` output; PayloadError naming what is wrong."""
        try:
            if data["version"] != STATE_VERSION:
                raise PayloadError(f"{where}: version {data['version']!r}, expected {STATE_VERSION}")
            for jwk in data["rotated_keys"]:
                key = public_from_jwk(jwk, f"{where}: rotated key")
                self._keys[kid_for(key)] = key
                self._rotated.add(kid_for(key))
            owners = data["owners"]
            self._owner.update({str(kid): str(dev) for kid, dev in owners.items()})
            for row in data["streams"]:
                dev, kid, boot, seq = _stream_row(row)
                self._streams[(dev, kid)] = _Stream(boot, seq)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PayloadError(f"{where}: not a verifier state file ({type(exc).__name__}: {exc})") from exc

    def _accept(self, env: Mapping[str, Any], *, ordered: bool = True) -> None:
        self._owner.setdefault(env["kid"], env["dev"])
        if not ordered:
            return
        key = (env["dev"], env["kid"])
        stream = self._streams.setdefault(key, _Stream(env["boot"], env["seq"]))
        stream.boot, stream.seq = env["boot"], env["seq"]
        stream.recent.append(env["seq"])


def _stream_row(row: Mapping[str, Any]) -> tuple[str, str, int, int]:
    """One ``streams`` row of a state file: (dev, kid, boot, seq), checked (``int()`` read
    ``true`` and ``"1"`` as 1)."""
    dev, kid, boot, seq = row["dev"], row["kid"], row["boot"], row["seq"]
    if not all(type(n) is int and n >= 0 for n in (boot, seq)):
        raise ValueError(f"boot and seq must be non-negative integers, found {boot!r}, {seq!r}")
    if not (isinstance(dev, str) and isinstance(kid, str)):
        raise TypeError(f"dev and kid must be strings, found {dev!r}, {kid!r}")
    return dev, kid, boot, seq


def unsigned_by_design(topic: str, payload: object) -> str | None:
    """Why a received message carries no signature by design, or None if it must be signed.

    - an empty payload (``mosquitto_sub -F %j`` prints ``null``): the removal of a retained
      message, such as the agent's clear of the last run's ``privacy_mode`` at start;
    - ``<base>/status`` with ``online`` / ``offline``: availability, which the broker itself
      publishes as the last will, so the device cannot sign it;
    - ``<base>/cmd/...``: commands sent to the device (by Home Assistant), not by it.

    Anything else on the device's topics, a ``status`` with another payload included, must be
    a valid signed envelope.
    """
    if payload is None or payload == "":
        return "empty payload: a retained message being cleared (unsigned by design)"
    levels = topic.split("/")
    if levels[-1] == "status" and isinstance(payload, str) and payload.encode() in AVAILABILITY:
        return "availability status (unsigned by design: the broker sends it as the last will)"
    if "cmd" in levels[:-1]:
        return "a command to the device, not a message from it (unsigned by design)"
    return None


def _unwrap(obj: Mapping[str, Any]) -> tuple[str, int | None]:
    topic = obj.get("topic")
    if not isinstance(topic, str):
        raise PayloadError("a {\"topic\", \"payload\"} line needs 'topic' as a string")
    received = obj.get("received_ms")
    if received is not None:
        if type(received) is not int or not 0 <= received <= MAX_SAFE_INT:
            raise PayloadError("'received_ms' must be an integer count of ms since the epoch")
        return topic, received
    return topic, _tst_ms(obj.get("tst"))


def _tst_ms(tst: object) -> int | None:
    """mosquitto_sub's ``tst`` in ms, or None if absent or unreadable (the clock is used then).

    mosquitto 2.0.11 prints ``2026-11-23T19:48:59.238905Z+0000``: local time, a stray ``Z``
    and the real offset; the ``Z`` is dropped when an offset follows.
    """
    if not isinstance(tst, str):
        return None
    match = _TST.match(tst)
    if match is None:
        return None
    text = match["time"] + (match["offset"] if match["offset"] not in (None, "Z") else "+00:00")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(when.timestamp() * 1000)


UNKNOWN_KID = "unknown kid"


def verify_stream(lines: Iterable[str | bytes], verifier: Verifier) -> Iterator[tuple[int, Result]]:
    """(1-based line number, result) for every non-blank line.

    A retained copy refused for an unknown key is checked once more after the last line (and
    reported then): the broker replays retained messages in topic order, so the retained
    ``key-rotation`` notice that vouches for the new key's retained ``key`` message may come
    after it. Retained copies are not ordered anyway, so this changes no other verdict."""
    deferred: list[tuple[int, str | bytes]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            result = verifier.check_line(line)
            if result.status == "rejected" and result.retained and result.reason.startswith(UNKNOWN_KID):
                deferred.append((number, line))
                continue
            yield number, result
    for number, line in deferred:
        yield number, verifier.check_line(line)
