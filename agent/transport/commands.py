"""Commands received over MQTT: a closed set, validated before anything acts on them.

Only two topics are accepted, both under the device's base topic:

- ``<base>/cmd/privacy_mode/set`` with payload ``ON`` or ``OFF`` (Home Assistant's switch), or
  a command signed by the operator key (below);
- ``<base>/cmd/checkpoint`` with an empty payload or ``PRESS`` (Home Assistant's button).

With an operator key configured (``mqtt.commands.operator_key``), turning privacy mode OFF,
which turns the camera back on, needs a signed command; ON (camera off) never does. A signed
command is one JSON object::

    {"v": 1, "cmd": "privacy_mode", "state": "OFF", "dev": "<device_id>", "ts": <ms>,
     "nonce": "<16..64 base64url chars>", "kid": "<operator key id>", "sig": "<Ed25519>"}

``sig`` covers the RFC 8785 form of every other member (as signed messages do); ``emotion-agent
command sign`` makes one. Its freshness (``ts`` within a window of the device clock) and
uniqueness (``nonce`` not seen in that window) are checked by :mod:`agent.transport.command_gate`.

Anything else (another topic, a retained message replayed by the broker, a payload that is too
long, not ASCII, not one of the words above, a signature that does not verify) raises
:class:`~agent.errors.PayloadError` whose message says why; the client logs it and carries on.
Pure logic: no paho import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.crypto.canonical import b64url_decode, b64url_encode, canonical, parse_strict
from agent.crypto.keys import kid_for
from agent.errors import PayloadError

MAX_COMMAND_BYTES = 512
"""No valid command is longer (a signed one is about 300 bytes); a larger payload is refused
before it is decoded."""

CommandName = Literal["privacy_mode", "checkpoint"]
SIGNED_FIELDS = frozenset({"v", "cmd", "state", "dev", "ts", "nonce", "kid", "sig"})
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command. ``on`` is the privacy mode asked for (None for a checkpoint);
    ``ts_ms`` and ``nonce`` are set for a signed command only."""

    name: CommandName
    on: bool | None = None
    ts_ms: int | None = None
    nonce: str | None = None

    @property
    def signed(self) -> bool:
        return self.nonce is not None


class CommandParser:
    """Turns (topic, payload) into a :class:`Command` or a reasoned refusal."""

    def __init__(
        self, base_topic: str, *, device_id: str = "", operator_key: Ed25519PublicKey | None = None
    ) -> None:
        self._routes: dict[str, CommandName] = {
            f"{base_topic}/cmd/privacy_mode/set": "privacy_mode",
            f"{base_topic}/cmd/checkpoint": "checkpoint",
        }
        self._device = device_id
        self._operator = operator_key

    @property
    def topics(self) -> list[str]:
        """The exact topics to subscribe to (no wildcards: nothing else is ever delivered)."""
        return sorted(self._routes)

    def parse(self, topic: str, payload: bytes, *, retained: bool = False) -> Command:
        name = self._routes.get(topic)
        if name is None:
            raise PayloadError(f"command topic {topic!r} is not one of {self.topics}")
        if retained:
            raise PayloadError(
                f"{topic}: a retained command is a stale replay from the broker; commands must be "
                "sent with retain=false"
            )
        if len(payload) > MAX_COMMAND_BYTES:
            raise PayloadError(
                f"{topic}: payload of {len(payload)} bytes is too long (at most {MAX_COMMAND_BYTES})"
            )
        try:
            word = payload.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{topic}: payload is not ASCII text") from exc
        if name == "privacy_mode":
            return self._privacy(topic, word)
        if word.upper() not in ("", "PRESS"):
            raise PayloadError(f"{topic}: payload {word[:16]!r} is not empty or PRESS")
        return Command("checkpoint")

    def _privacy(self, topic: str, word: str) -> Command:
        if word.startswith("{") and self._operator is not None:
            return self._signed(topic, word)
        if word.upper() not in ("ON", "OFF"):
            signed = " nor a signed command" if self._operator is not None else ""
            raise PayloadError(f"{topic}: payload {word[:16]!r} is not ON or OFF{signed}")
        on = word.upper() == "ON"
        if not on and self._operator is not None:
            raise PayloadError(
                f"{topic}: turning privacy mode OFF (the camera on) needs a command signed by the "
                "operator key (mqtt.commands.operator_key); see `emotion-agent command sign`"
            )
        return Command("privacy_mode", on=on)

    def _signed(self, topic: str, text: str) -> Command:
        assert self._operator is not None  # noqa: S101 - only called with a key
        try:
            obj = parse_strict(text)
        except PayloadError as exc:
            raise PayloadError(f"{topic}: signed command is not strict JSON: {exc}") from exc
        if not isinstance(obj, dict) or set(obj) != SIGNED_FIELDS:
            raise PayloadError(f"{topic}: a signed command has exactly the members {sorted(SIGNED_FIELDS)}")
        _check_fields(topic, obj, self._device)
        if obj["kid"] != kid_for(self._operator):
            raise PayloadError(f"{topic}: signed by key {str(obj['kid'])[:43]!r}, not the operator key")
        sig = b64url_decode(obj["sig"], f"{topic}: sig", 64)
        try:
            self._operator.verify(sig, canonical({k: v for k, v in obj.items() if k != "sig"}))
        except InvalidSignature as exc:
            raise PayloadError(f"{topic}: the signature does not verify with the operator key") from exc
        return Command("privacy_mode", on=obj["state"] == "ON", ts_ms=obj["ts"], nonce=obj["nonce"])


def _check_fields(topic: str, obj: dict[str, Any], device: str) -> None:
    version = type(obj["v"]) is int and obj["v"] == 1  # JSON true equals 1 in Python
    if not version or obj["cmd"] != "privacy_mode" or obj["state"] not in ("ON", "OFF"):
        raise PayloadError(f'{topic}: a signed command needs v 1, cmd "privacy_mode", state ON or OFF')
    if obj["dev"] != device:
        raise PayloadError(f"{topic}: signed for device {str(obj['dev'])[:64]!r}, not {device!r}")
    if type(obj["ts"]) is not int or obj["ts"] < 0:
        raise PayloadError(f"{topic}: ts must be milliseconds since the epoch")
    if not isinstance(obj["nonce"], str) or not _NONCE.match(obj["nonce"]):
        raise PayloadError(f"{topic}: nonce must be 16 to 64 base64url characters")
    if not isinstance(obj["sig"], str) or not isinstance(obj["kid"], str):
        raise PayloadError(f"{topic}: kid and sig must be strings")


def sign_command(
    key: Ed25519PrivateKey, device_id: str, state: str, ts_ms: int, nonce: str
) -> dict[str, Any]:
    """A signed privacy-mode command (what ``emotion-agent command sign`` prints)."""
    obj: dict[str, Any] = {
        "v": 1,
        "cmd": "privacy_mode",
        "state": state,
        "dev": device_id,
        "ts": ts_ms,
        "nonce": nonce,
        "kid": kid_for(key.public_key()),
    }
    obj["sig"] = b64url_encode(key.sign(canonical(obj)))
    return obj
