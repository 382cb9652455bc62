"""Outputs chosen by the config: JSON lines and MQTT (with Home Assistant discovery).

paho is imported only when MQTT is enabled, so a JSON-lines-only device never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.clock import Clock
from agent.config import AgentConfig
from agent.crypto import public_jwk
from agent.outputs.base import Output
from agent.outputs.jsonl import JsonLinesOutput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.transport.commands import Command
    from agent.transport.discovery import DiscoverySpec


def discovery_spec(cfg: AgentConfig) -> DiscoverySpec:
    from agent.transport.discovery import DiscoverySpec  # noqa: PLC0415

    return DiscoverySpec(
        device_id=cfg.device_id,
        base_topic=cfg.mqtt.base_topic or f"emotion-agent/{cfg.device_id}",
        prefix=cfg.mqtt.discovery_prefix,
        window_seconds=cfg.analytics.window_seconds,
        expire_after_windows=cfg.mqtt.expire_after_windows,
        alert_rules=[rule.name for rule in cfg.analytics.alerts],
        sw_version=__version__,
    )


def build_outputs(
    cfg: AgentConfig,
    clock: Clock,
    *,
    public_key: Ed25519PublicKey,
    on_command: Callable[[Command], None],
    on_drop: Callable[[Any], None],
) -> list[Output]:
    outputs: list[Output] = []
    if cfg.outputs.jsonl is not None:
        outputs.append(JsonLinesOutput(cfg.outputs.jsonl))
    if cfg.mqtt.enabled:
        from agent.transport.mqtt import MqttOutput  # noqa: PLC0415 - paho only when MQTT is on

        outputs.append(
            MqttOutput(
                cfg.mqtt,
                device_id=cfg.device_id,
                state_dir=cfg.state_dir,
                spool_days=cfg.retention.spool_days,
                clock=clock,
                on_command=on_command,
                on_drop=on_drop,
                public_key=public_jwk(public_key),
                discovery=discovery_spec(cfg),
            )
        )
    return outputs
