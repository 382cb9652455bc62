"""Config sections of the MQTT transport (``mqtt:`` in the agent config).

The contract keys (host, port, tls, username, password_file) are in DESIGN.md; the rest tune
reconnects, the offline spool and Home Assistant discovery, each with a safe default.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.analytics.settings import AnalyticsConfig
from agent.privacy.settings import PolicyConfig, RetentionConfig
from agent.settings_base import ConfigPath, Section, host_problem

MAX_TOPIC_PREFIX = 128


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot prefix topics the agent publishes to and subscribes under, or None.

    MQTT forbids wildcards (+ #) and NUL in topic names; a leading ``$`` is the broker's own
    space; empty levels (a leading, trailing or double /) make topics no one subscribes to.
    The spec (MQTT 3.1.1 1.5.3, 5.0 1.5.4) lets a receiver close the connection on the other
    control characters and on Unicode non-characters, and mosquitto does (``utf8_mosq.c``): a
    topic holding one passed check-config yet made the agent reconnect for ever."""
    if not topic:
        return "must not be empty"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_PREFIX:
        return f"longer than {MAX_TOPIC_PREFIX} bytes"
    bad = sorted({c for c in topic if c in "+#" or _refused_by_brokers(ord(c))})
    if bad:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
        return (
            f"contains {shown}; not allowed in a topic: the MQTT wildcards + and #, control "
            "characters (U+0000-U+001F, U+007F-U+009F), surrogates (U+D800-U+DFFF) and Unicode "
            "non-characters (U+FDD0-U+FDEF, U+FFFE, U+FFFF and their like in every plane), which "
            "brokers such as mosquitto refuse by closing the connection"
        )
    if topic.startswith("$"):
        return "must not start with $ (reserved for the broker, e.g. $SYS)"
    if topic.startswith("/") or topic.endswith("/") or "//" in topic:
        return "has an empty level (a leading, trailing or double /)"
    return None


def _refused_by_brokers(code: int) -> bool:
    """A code point that MQTT forbids (U+0000, surrogates) or lets a broker refuse (the other C0
    and C1 control characters, non-characters), as mosquitto 2.0 does."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (names are not resolved: DNS may lie)."""
    if host.lower().rstrip(".") in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TlsConfig(Section):
    ca: ConfigPath = Field(
        ..., title="CA certificate (PEM) that signed the broker's certificate",
        description="The broker's certificate must chain to it and name mqtt.host.",
    )
    cert: ConfigPath | None = Field(
        None, title="Client certificate (PEM)",
        description="Presented to brokers that require client certificates; set together with key.",
    )
    key: ConfigPath | None = Field(
        None, title="Client private key (PEM)",
        description="The private key of cert; readable by the service only.",
    )


class CommandsConfig(Section):
    """Commands the agent obeys (docs/mqtt.md, "Command topics: threat model")."""

    enabled: bool = Field(
        True,
        title="Obey commands",
        description="Subscribe to <base>/cmd/privacy_mode/set and <base>/cmd/checkpoint. Off, "
        "Home Assistant discovery shows privacy mode read-only and no checkpoint button. "
        "check-config warns when this is on and the broker connection has neither a TLS client "
        "certificate nor a password.",
    )
    operator_key: ConfigPath | None = Field(
        None,
        title="Operator public key (JWK, PEM or base64)",
        description="When set, turning privacy mode OFF (the camera on) needs a command signed "
        "by this key (`emotion-agent command sign`); ON never does.",
    )
    privacy_min_seconds: float = Field(
        2.0, ge=0.1, le=3600, title="Shortest time between two privacy-mode changes by MQTT (s)",
        description="Commands arriving faster are coalesced: the last one asked for is applied.",
    )
    checkpoint_min_seconds: float = Field(
        60.0, ge=1, le=86400, title="Shortest time between two checkpoints asked for by MQTT (s)",
        description="Presses arriving faster are coalesced into one.",
    )
    replay_window_seconds: int = Field(
        60, ge=5, le=3600, title="How old or new a signed command may be (s)",
        description="A signed command outside it, or whose nonce was seen within it, is ignored.",
    )


class DiscoveryConfig(Section):
    mode: Literal["device", "entities", "off"] = Field(
        "device",
        title="Home Assistant discovery form",
        description="device: one device-based message (Home Assistant 2024.11 and later); "
        "entities: one message per entity (Home Assistant 2021.12 to 2024.10, every later "
        "version, and other readers of discovery); off: none. At each start the agent removes "
        "the retained discovery messages of the form it no longer uses.",
    )


class MqttConfig(Section):
    enabled: bool = Field(
        True, title="Publish over MQTT",
        description="false: signed messages go only to outputs.jsonl and the audit log.",
    )
    host: str = Field(
        "127.0.0.1", min_length=1, title="Broker host",
        description="Name or address of the MQTT broker.",
    )
    port: int = Field(
        8883, ge=1, le=65535, title="Broker port",
        description="8883 is the usual port of MQTT over TLS, 1883 of plain MQTT.",
    )
    tls: TlsConfig | None = Field(
        None, title="TLS settings (omit only for a loopback broker)",
        description="CA, and optionally a client certificate and key, all PEM files.",
    )
    username: str | None = Field(
        None, title="Username",
        description="Set together with password_file, or omit when the broker identifies by certificate.",
    )
    password_file: ConfigPath | None = Field(
        None, title="File holding the password (never inline)",
        description="The password is the file's first line; the file must not be readable by others.",
    )
    base_topic: str | None = Field(
        None, title="Base topic", description="Defaults to emotion-agent/<device_id>."
    )
    discovery_prefix: str = Field(
        "homeassistant", title="Home Assistant discovery prefix",
        description="Home Assistant's MQTT discovery topic prefix.",
    )
    discovery: DiscoveryConfig = Field(
        default_factory=DiscoveryConfig,
        title="Announce entities to Home Assistant",
        description="Retained discovery messages, re-sent when Home Assistant announces `online` "
        "on <discovery_prefix>/status. `true` / `false` (older configs) mean mode device / off.",
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        title="MQTT client id",
        description="Defaults to emotion-agent-<device_id>; must match the broker's ACL if it "
        "uses the client id.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto",
        title="MQTT protocol version",
        description="auto: MQTT 5, falling back to 3.1.1 when the broker refuses version 5.",
    )
    keepalive_seconds: int = Field(
        30, ge=5, le=3600, title="Keep-alive interval (s)",
        description="The broker considers the agent gone (and sends its will) after 1.5 times this.",
    )
    reconnect_min_seconds: int = Field(
        1, ge=1, le=600, title="First wait before a reconnect (s)",
        description="After a lost or refused connection; it doubles up to reconnect_max_seconds.",
    )
    reconnect_max_seconds: int = Field(
        120, ge=1, le=3600, title="Longest wait between reconnects (s); the wait doubles up to it",
        description="The longest wait between two connection attempts.",
    )
    spool_max_mb: int = Field(
        64,
        ge=1,
        le=4096,
        title="Largest size of the offline spool (MiB)",
        description="When unsent messages exceed it, the oldest are dropped, counted and reported.",
    )
    max_inflight: int = Field(
        20, ge=1, le=1000, title="Messages sent but not yet acknowledged at one time",
        description="QoS 1 messages awaiting the broker's acknowledgement; the rest wait in the spool.",
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, title="Commands over MQTT (privacy mode, checkpoint)",
        description="Which command topics are accepted, the operator key for privacy off, rate limits.",
    )
    takeover_backoff_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        title="First wait after another client took the session over (s)",
        description="A client reusing our client id (MQTT 5 reason 142, or connections lost within "
        "seconds, repeatedly) makes the agent wait this long before reconnecting, doubling up to "
        "10 × this, instead of fighting for the session.",
    )
    expire_after_windows: int = Field(
        3,
        ge=1,
        le=1000,
        title="Windows after which Home Assistant shows a statistic as unavailable",
        description="expire_after = this × analytics.window_seconds, so a stale value never "
        "shows as current.",
    )

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        problem = host_problem(value)
        if problem:
            raise ValueError(f"mqtt.host {value!r} {problem}")
        return value

    @field_validator("base_topic", "discovery_prefix")
    @classmethod
    def _topic_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            problem = topic_problem(value)
            if problem:
                raise ValueError(f"mqtt.{info.field_name} {value!r}: {problem}")
        return value

    @model_validator(mode="after")
    def _no_clear_text_password(self) -> MqttConfig:
        """A password sent without TLS can be read by anyone on the path; only loopback is safe."""
        clear = self.password_file is not None and self.tls is None
        if self.enabled and clear and not is_loopback(self.host):
            raise ValueError(
                f"mqtt.password_file: the password would cross the network in clear text to "
                f"mqtt.host {self.host!r} (no mqtt.tls); set mqtt.tls, or use a broker on this device"
            )
        return self

    @field_validator("discovery", mode="before")
    @classmethod
    def _legacy_discovery_flag(cls, value: object) -> object:
        """``discovery: true|false`` from configs written before the modes existed."""
        if isinstance(value, bool):
            return {"mode": "device" if value else "off"}
        return value

    def warnings(self) -> list[str]:
        """Legal but risky settings, for ``check-config`` and the start log (docs/mqtt.md)."""
        client_cert = self.tls is not None and self.tls.cert is not None
        if self.enabled and self.commands.enabled and not client_cert and self.password_file is None:
            return [
                "mqtt.commands: commands are obeyed but the broker connection has neither a TLS "
                "client certificate (mqtt.tls.cert) nor a password (mqtt.password_file), so the "
                "broker may let anyone publish them (privacy mode OFF turns the camera on); "
                "authenticate and restrict the cmd topics with an ACL, set "
                "mqtt.commands.operator_key, or set mqtt.commands.enabled: false"
            ]
        return []

    @model_validator(mode="after")
    def _verify_reconnect_range(self) -> MqttConfig:
        if self.reconnect_min_seconds > self.reconnect_max_seconds:
            raise ValueError(
                f"mqtt.reconnect_min_seconds ({self.reconnect_min_seconds}) must not exceed "
                f"mqtt.reconnect_max_seconds ({self.reconnect_max_seconds})"
            )
        return self


class MqttSite(Protocol):
    """What the MQTT output reads of the agent config (``AgentConfig`` has it): its own section,
    the device id and state folder, the windows and alert rules it announces to Home Assistant,
    and how long the spool keeps unsent messages."""

    @property
    def device_id(self) -> str: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def mqtt(self) -> MqttConfig: ...

    @property
    def analytics(self) -> AnalyticsConfig: ...

    @property
    def retention(self) -> RetentionConfig: ...

    @property
    def policy(self) -> PolicyConfig: ...
