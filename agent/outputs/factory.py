"""Outputs chosen by the config: JSON lines and MQTT (with Home Assistant discovery).

paho is imported only when MQTT is enabled, so a JSON-lines-only device never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from agent.clock import Clock
from agent.crypto import public_jwk
from agent.outputs.base import Output
from agent.outputs.jsonl import JsonLinesOutput
from agent.outputs.settings import OutputsConfig
from agent.transport.settings import MqttSite

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.transport.commands import Command
    from agent.transport.spool_types import DropReport


class OutputsSite(MqttSite, Protocol):
    """What the outputs read of the agent config (``AgentConfig`` has it)."""

    @property
    def outputs(self) -> OutputsConfig: ...


def build_outputs(
    cfg: OutputsSite,
    clock: Clock,
    *,
    public_key: Ed25519PublicKey,
    on_command: Callable[[Command], None],
    on_drop: Callable[[DropReport], None],
    on_event: Callable[[str, str], None] | None = None,
    on_cosignature: Callable[[bytes], object] | None = None,
    previous_keys: Sequence[Ed25519PublicKey] = (),
) -> list[Output]:
    outputs: list[Output] = []
    if cfg.outputs.jsonl is not None:
        outputs.append(JsonLinesOutput(cfg.outputs.jsonl))
    if cfg.mqtt.enabled:
        from agent.transport.mqtt import MqttOutput  # noqa: PLC0415 - paho only when MQTT is on

        outputs.append(
            MqttOutput.from_config(
                cfg,
                clock,
                on_command=on_command,
                on_drop=on_drop,
                on_event=on_event,
                on_cosignature=on_cosignature,
                public_key=public_jwk(public_key),
                previous_keys=previous_keys,
            )
        )
    return outputs
