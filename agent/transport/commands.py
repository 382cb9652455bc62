"""Commands received over MQTT: a closed set, validated before anything acts on them.

Only two topics are accepted, both under the device's base topic:

- ``<base>/cmd/privacy_mode/set`` with payload ``ON`` or ``OFF`` (Home Assistant's switch);
- ``<base>/cmd/checkpoint`` with an empty payload or ``PRESS`` (Home Assistant's button).

Anything else (another topic, a retained message replayed by the broker, a payload that is too
long, not ASCII or not one of the words above) raises :class:`~agent.errors.PayloadError` whose
message says why; the client logs it and carries on. Pure logic: no paho import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.errors import PayloadError

MAX_COMMAND_BYTES = 64
"""No valid command is longer; a larger payload is refused before it is decoded."""

CommandName = Literal["privacy_mode", "checkpoint"]


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command. ``on`` is the privacy mode asked for (None for a checkpoint)."""

    name: CommandName
    on: bool | None = None


class CommandParser:
    """Turns (topic, payload) into a :class:`Command` or a reasoned refusal."""

    def __init__(self, base_topic: str) -> None:
        self._routes: dict[str, CommandName] = {
            f"{base_topic}/cmd/privacy_mode/set": "privacy_mode",
            f"{base_topic}/cmd/checkpoint": "checkpoint",
        }

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
            word = payload.decode("ascii").strip().upper()
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{topic}: payload is not ASCII text") from exc
        if name == "privacy_mode":
            if word not in ("ON", "OFF"):
                raise PayloadError(f"{topic}: payload {word[:16]!r} is not ON or OFF")
            return Command("privacy_mode", on=word == "ON")
        if word not in ("", "PRESS"):
            raise PayloadError(f"{topic}: payload {word[:16]!r} is not empty or PRESS")
        return Command("checkpoint")
