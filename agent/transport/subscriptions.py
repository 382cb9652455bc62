"""What the link subscribes to, and where each message that arrives goes: a witness's cosigned
checkpoints, Home Assistant's births and the commands.

Nothing that arrives can stop the link: a command that does not validate is counted and logged,
and a failing handler is logged, never raised into paho's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.crypto.keys import load_public_key
from agent.log_throttle import Throttled
from agent.transport.commands import Command, CommandParser
from agent.transport.settings import CommandsConfig

if TYPE_CHECKING:
    from agent.mqtt_client import paho

logger = logging.getLogger(__name__)


class Subscriptions:
    """``count`` adds one to the ``accepted`` or ``rejected`` command figure of the health message.

    ``cosignature_topic`` is subscribed only with ``on_cosignature``, Home Assistant's
    ``ha_status_topic`` only when discovery is on, the command topics only when commands are."""

    def __init__(
        self,
        base_topic: str,
        *,
        device_id: str,
        commands: CommandsConfig,
        count: Callable[[str], object],
        on_command: Callable[[Command], None] | None,
        cosignature_topic: str,
        on_cosignature: Callable[[bytes], object] | None,
        ha_status_topic: str | None,
        on_ha_status: Callable[[bytes], None],
    ) -> None:
        operator = commands.operator_key
        self._commands = CommandParser(
            base_topic,
            device_id=device_id,
            operator_key=load_public_key(operator) if operator is not None else None,
        )
        self._commands_enabled = commands.enabled
        self._count = count
        self._on_command = on_command
        self._cosignature_topic = cosignature_topic
        self._on_cosignature = on_cosignature
        self._ha_status_topic = ha_status_topic
        self._on_ha_status = on_ha_status
        self._warn = Throttled(logger)  # a flood of bad commands: a line a minute, with the count

    def topics(self) -> list[tuple[str, int]]:
        """(topic, QoS) of every subscription, for ``subscribe`` at each connect."""
        subs = [(t, 1) for t in self._commands.topics] if self._commands_enabled else []
        if self._ha_status_topic is not None:
            subs.append((self._ha_status_topic, 1))
        if self._on_cosignature is not None:
            subs.append((self._cosignature_topic, 1))  # a witness's cosigned checkpoints (docs/fleet.md)
        return subs

    def deliver(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        """paho's ``on_message`` (network thread)."""
        if msg.topic == self._cosignature_topic and self._on_cosignature is not None:
            try:
                self._on_cosignature(bytes(msg.payload))
            except Exception:  # a full disk or a bad note never stops the link
                logger.exception("keeping a cosigned checkpoint failed")
            return
        try:
            if self._ha_status_topic is not None and msg.topic == self._ha_status_topic:
                self._on_ha_status(bytes(msg.payload))
                return
            command = self._commands.parse(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        except Exception as exc:
            self._count("rejected")
            self._warn.warning(
                "command", "ignored an MQTT command: %s", exc, extra={"fields": {"topic": msg.topic}}
            )
            return
        self._count("accepted")
        logger.info("MQTT command %s", command.name, extra={"fields": {"on": command.on}})
        if self._on_command is not None:
            try:
                self._on_command(command)
            except Exception:
                logger.exception("the command handler failed for %s; the agent carries on", command.name)
