"""Home Assistant MQTT discovery, in one of two forms (``mqtt.discovery.mode``).

- ``device`` (Home Assistant 2024.11 and later): one retained message on
  ``<prefix>/device/<object_id>/config`` with ``dev`` (the device), ``o`` (this software) and
  ``cmps`` (one entry per entity, each with ``p`` = platform). Home Assistant acts only on the
  components a message holds: one left out keeps its entity, one sent as ``{"p": <platform>}``
  alone loses it. So a component announced before and no longer wanted (a removed alert rule)
  stays in ``cmps`` as ``{"p": <platform>}`` (:func:`retired_components`).
- ``entities`` (Home Assistant 2021.12 to 2024.10, and every later version; openHAB and
  Node-RED dashboards that read discovery): one retained message per entity on
  ``<prefix>/<platform>/<object_id>/<entity>/config`` (``object_id`` as the node id), each with
  the same ``unique_id``, the same device block and its own availability.

Every entity carries its own ``qos`` (Home Assistant does not pass a device-level ``qos`` on to
the entities of a device message). Entities read
the signed envelopes directly: every state template looks inside ``value_json.body``, and a
template that renders ``None`` makes Home Assistant show *unknown*, which is what a suppressed
window (fewer than k people) must look like. ``expire_after`` turns a value stale after a few
windows, so yesterday's numbers never show as current.

Payload fields read here (written by the window aggregator, alert rules and health report):

- ``stats`` (``WindowReport.to_body``): ``body.people``; ``body.shares_pm`` {emotion:
  per-mille}, null when the window is suppressed; ``body.valence_milli`` and
  ``body.arousal_milli`` (-1000..1000), null when suppressed.
- ``alert/<rule>`` (retained, ``AlertState.to_body``): ``body.rule`` and ``body.state``
  (``raised``/``cleared``), asserted at every start, so a restarted agent never leaves an old
  ``raised`` showing.
- ``health`` (``agent.records.health_body``: the meter's figures, camera and vision-stage totals,
  the spool's state):
  ``body.fps_milli`` (frames per second × 1000), ``body.drops``, ``body.spool_backlog``.
- ``audit/checkpoint``: the envelope's ``ts`` (ms since the epoch).
- ``privacy_mode`` (retained): ``body.state`` ``ON`` or ``OFF``, the mode actually in force.
- ``key`` (retained): the signed envelope whose ``body.jwk`` is the device's Ed25519 public
  key (RFC 8037), or a bare JWK; ``kid`` is at the root of both.

Pure logic: no paho import.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agent import __version__
from agent.emotions import EMOTIONS

if TYPE_CHECKING:
    from agent.transport.settings import MqttSite

_ID = re.compile(r"[^a-zA-Z0-9_-]")

DiscoveryMode = Literal["device", "entities", "off"]
QOS = 1
"""Per entity: Home Assistant subscribes and sends commands with it."""


@dataclass(frozen=True, slots=True)
class DiscoverySpec:
    """What to announce; built by the service from the config and the alert rules."""

    device_id: str
    base_topic: str
    prefix: str = "homeassistant"
    window_seconds: int = 60
    expire_after_windows: int = 3
    emotions: Sequence[str] = EMOTIONS
    alert_rules: Sequence[str] = ()
    sw_version: str = "0"
    model: str = "emotion-agent"
    extra_device: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    """The signing key's ``kid``, shown as the device's serial number in Home Assistant."""
    mode: DiscoveryMode = "device"
    commands: bool = True
    """``mqtt.commands.enabled``: off, nothing listens on a command topic, so no entity offers
    one (the privacy switch becomes a read-only binary sensor, the checkpoint button goes)."""
    switch_allowed: bool = True
    """``policy.privacy_mode.mqtt``: off, the agent ignores the switch, so it is not offered."""

    @property
    def privacy_switch(self) -> bool:
        """The switch is offered: commands are on and the policy lets it pause capture."""
        return self.commands and self.switch_allowed

    @property
    def object_id(self) -> str:
        return "emotion_agent_" + _ID.sub("_", self.device_id)

    @property
    def topic(self) -> str:
        """The device message's topic (``device`` mode)."""
        return f"{self.prefix}/device/{self.object_id}/config"

    def entity_topic(self, platform: str, key: str) -> str:
        """One entity's topic (``entities`` mode): the device's object id is the node id."""
        return f"{self.prefix}/{platform}/{self.object_id}/{key}/config"

    @property
    def status_topic(self) -> str:
        """Home Assistant's birth/will topic; ``online`` there asks us to re-announce."""
        return f"{self.prefix}/status"


def discovery_spec(cfg: MqttSite) -> DiscoverySpec:
    """What ``cfg`` announces: the device and its topics, the window length (``expire_after``)
    and one entity per alert rule. The MQTT output adds the mode and the key's ``kid``."""
    return DiscoverySpec(
        device_id=cfg.device_id,
        base_topic=cfg.mqtt.base_topic or f"emotion-agent/{cfg.device_id}",
        prefix=cfg.mqtt.discovery_prefix,
        window_seconds=cfg.analytics.window_seconds,
        expire_after_windows=cfg.mqtt.expire_after_windows,
        alert_rules=tuple(rule.name for rule in cfg.analytics.alerts),
        sw_version=__version__,
        commands=cfg.mqtt.commands.enabled,
        switch_allowed=cfg.policy.privacy_mode.mqtt,
    )


def _slug(name: str) -> str:
    return _ID.sub("_", name)


def _optional(expr: str, divisor: int = 1, filt: str = "int") -> str:
    """A template rendering ``expr / divisor`` through ``filt``, or None when absent or null."""
    value = "v" if divisor == 1 else f"(v / {divisor})"
    return (
        f"{{% set v = {expr} if {expr} is defined else none %}}"
        f"{{{{ {value} | {filt} if v is number else None }}}}"
    )


_KEY_ATTRIBUTES = (
    "{{ (value_json.body.jwk if value_json.body is defined and value_json.body.jwk is defined "
    "else value_json) | tojson }}"
)
"""The JWK as attributes, from the signed ``key`` envelope (``body.jwk``) or a bare JWK."""


def _sensors(spec: DiscoverySpec, uid: str, expire: int) -> dict[str, dict[str, Any]]:
    base = spec.base_topic
    stats = f"{base}/stats"
    cmps: dict[str, dict[str, Any]] = {
        "people": {
            "p": "sensor",
            "name": "People per window",
            "state_topic": stats,
            "value_template": _optional("value_json.body.people"),
            "unit_of_measurement": "people",
            "state_class": "measurement",
            "expire_after": expire,
            "icon": "mdi:account-group",
        }
    }
    for label in spec.emotions:
        shares = "value_json.body.shares_pm"
        cmps[f"share_{_slug(label)}"] = {
            "p": "sensor",
            "name": f"{label.capitalize()} share",
            "state_topic": stats,
            "value_template": (
                f"{{% set s = {shares} if {shares} is defined else none %}}"
                f"{{{{ (s[{label!r}] / 10) | round(1) if s is mapping and {label!r} in s else None }}}}"
            ),
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "expire_after": expire,
        }
    for axis in ("valence", "arousal"):
        cmps[axis] = {
            "p": "sensor",
            "name": axis.capitalize(),
            "state_topic": stats,
            "value_template": _optional(f"value_json.body.{axis}_milli", 1000, "round(3)"),
            "state_class": "measurement",
            "expire_after": expire,
        }
    for key, cfg in cmps.items():
        cfg["unique_id"] = f"{uid}_{key}"
    return cmps


def _diagnostics(spec: DiscoverySpec, uid: str) -> dict[str, dict[str, Any]]:
    base = spec.base_topic
    health = f"{base}/health"
    stale = spec.window_seconds * spec.expire_after_windows
    diag: dict[str, dict[str, Any]] = {
        "fps": {"p": "sensor", "name": "Frames per second", "state_topic": health,
                "value_template": _optional("value_json.body.fps_milli", 1000, "round(1)"),
                "unit_of_measurement": "fps", "state_class": "measurement", "expire_after": stale},
        "frames_dropped": {"p": "sensor", "name": "Frames dropped", "state_topic": health,
                           "value_template": _optional("value_json.body.drops"),
                           "state_class": "total_increasing", "expire_after": stale},
        "spool_backlog": {"p": "sensor", "name": "Unsent messages", "state_topic": health,
                          "value_template": _optional("value_json.body.spool_backlog"),
                          "state_class": "measurement", "expire_after": stale},
        "last_checkpoint": {"p": "sensor", "name": "Last audit checkpoint", "device_class": "timestamp",
                            "state_topic": f"{base}/audit/checkpoint",
                            "value_template": "{{ (value_json.ts / 1000) | timestamp_custom("
                            "'%Y-%m-%dT%H:%M:%S+00:00', false) if value_json.ts is number else None }}"},
        "public_key": {"p": "sensor", "name": "Signing key", "state_topic": f"{base}/key",
                       "value_template": "{{ value_json.kid }}", "json_attributes_topic": f"{base}/key",
                       "json_attributes_template": _KEY_ATTRIBUTES,
                       "icon": "mdi:key"},
    }
    for key, cfg in diag.items():
        cfg["entity_category"] = "diagnostic"
        cfg["unique_id"] = f"{uid}_{key}"
    return diag


_PRIVACY_STATE = (
    "{{ value_json.body.state if value_json is defined and value_json.body is defined else None }}"
)


def _controls(spec: DiscoverySpec, uid: str) -> dict[str, dict[str, Any]]:
    """The privacy switch and checkpoint button. Only what the agent obeys is offered: with
    commands off (nothing subscribes to a command topic) neither, and with the switch not
    allowed (``policy.privacy_mode.mqtt: false``) privacy mode is shown read-only, a binary
    sensor under its own component id, so the switch's id can be retired in ``device`` mode."""
    base = spec.base_topic
    state = {
        "name": "Privacy mode",
        "state_topic": f"{base}/privacy_mode",
        "value_template": _PRIVACY_STATE,
        "payload_on": "ON",
        "payload_off": "OFF",
        "icon": "mdi:eye-off",
    }
    cmps: dict[str, dict[str, Any]] = {}
    if spec.privacy_switch:
        cmps["privacy_mode"] = {
            "p": "switch", **state, "command_topic": f"{base}/cmd/privacy_mode/set",
            "entity_category": "config", "unique_id": f"{uid}_privacy_mode",
        }
    else:
        cmps["privacy_state"] = {
            "p": "binary_sensor", **state, "entity_category": "diagnostic",
            "unique_id": f"{uid}_privacy_state",
        }
    if spec.commands:
        cmps["checkpoint"] = {
            "p": "button",
            "name": "Publish audit checkpoint",
            "command_topic": f"{base}/cmd/checkpoint",
            "payload_press": "PRESS",
            "entity_category": "diagnostic",
            "unique_id": f"{uid}_checkpoint",
        }
    for rule in spec.alert_rules:
        key = f"alert_{_slug(rule)}"
        cmps[key] = {
            "p": "binary_sensor",
            "name": f"Alert {rule}",
            "device_class": "problem",
            "state_topic": f"{base}/alert/{rule}",
            # The rule's own retained state; anything else renders None (unknown), never OFF.
            "value_template": (
                "{% set b = value_json.body if value_json is defined and value_json.body is defined "
                "else none %}"
                "{{ ({'raised': 'ON', 'cleared': 'OFF'})[b.state] if b is mapping and "
                f"b.rule == {rule!r} and b.state in ('raised', 'cleared') else None }}}}"
            ),
            "payload_on": "ON",
            "payload_off": "OFF",
            "unique_id": f"{uid}_{key}",
        }
    return cmps


def components(spec: DiscoverySpec) -> dict[str, dict[str, Any]]:
    """Every entity's config keyed by its component id, with ``p`` = platform and ``qos``."""
    uid = spec.object_id
    expire = spec.window_seconds * spec.expire_after_windows
    cmps = {**_sensors(spec, uid, expire), **_diagnostics(spec, uid), **_controls(spec, uid)}
    for cfg in cmps.values():
        cfg["qos"] = QOS
    return cmps


def _device(spec: DiscoverySpec, *, serial: bool = True) -> dict[str, Any]:
    """The device block; ``serial=False`` leaves out ``sn``, unknown to Home Assistant 2023.9 and
    earlier, whose device schema refuses unknown keys (and the whole entity with them)."""
    return {
        "ids": [spec.object_id],
        "name": f"Emotion agent {spec.device_id}",
        "mf": "emotion-agent",
        "mdl": spec.model,
        "sw": spec.sw_version,
        **({"sn": spec.key_id} if spec.key_id and serial else {}),
        **spec.extra_device,
    }


def _availability(spec: DiscoverySpec) -> dict[str, str]:
    return {
        "availability_topic": f"{spec.base_topic}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def platforms(spec: DiscoverySpec) -> dict[str, str]:
    """Component id to platform: what a device message for ``spec`` holds."""
    return {key: cfg["p"] for key, cfg in components(spec).items()}


def retired_components(spec: DiscoverySpec, announced: Mapping[str, str]) -> dict[str, str]:
    """The components of ``announced`` (id to platform, as a device message carried them) that
    ``spec`` no longer has: each goes into the next device message as ``{"p": <platform>}``.

    Home Assistant 2024.11+ (``mqtt/discovery.py``) dispatches one update per component present
    in ``cmps`` and nothing for an absent one; a component whose config is empty once ``p`` is
    popped is an empty payload for its discovery hash, on which ``entity.py`` removes the entity
    and forgets the hash. For a hash it does not hold, the same is ignored without a word, so the
    entry can stay: a retained message keeps telling a Home Assistant that was away."""
    current = platforms(spec)
    return {key: platform for key, platform in announced.items() if key not in current}


def build_discovery(spec: DiscoverySpec, retired: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The device-based discovery payload (a dict; :func:`encode_discovery` gives the bytes),
    with each of ``retired`` (id to platform, from :func:`retired_components`) as a removal.

    Availability sits at the root: Home Assistant shares it with every component."""
    cmps: dict[str, dict[str, Any]] = {key: {"p": platform} for key, platform in (retired or {}).items()}
    cmps.update(components(spec))
    return {
        "dev": _device(spec),
        "o": {"name": "emotion-agent", "sw": spec.sw_version},
        **_availability(spec),
        "cmps": cmps,
    }


def build_entity_configs(spec: DiscoverySpec) -> dict[str, dict[str, Any]]:
    """Per-entity discovery payloads keyed by topic: the same entities, ids and device."""
    out: dict[str, dict[str, Any]] = {}
    for key, cfg in components(spec).items():
        platform = cfg.pop("p")
        out[spec.entity_topic(platform, key)] = {
            **cfg,
            "dev": _device(spec, serial=False),  # the kid stays readable on the public_key sensor
            "o": {"name": "emotion-agent", "sw": spec.sw_version},
            **_availability(spec),
        }
    return out


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def encode_discovery(spec: DiscoverySpec, retired: Mapping[str, str] | None = None) -> bytes:
    return _encode(build_discovery(spec, retired))


def announcements(spec: DiscoverySpec, retired: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The retained messages of ``spec.mode``, topic to payload (none when ``off``); ``retired``
    applies to ``device`` mode only (``entities`` mode clears a topic instead)."""
    if spec.mode == "device":
        return {spec.topic: encode_discovery(spec, retired)}
    if spec.mode == "entities":
        return {topic: _encode(cfg) for topic, cfg in build_entity_configs(spec).items()}
    return {}


def all_topics(spec: DiscoverySpec) -> set[str]:
    """Every discovery topic either mode would use for ``spec``, with commands on or off."""
    topics = {spec.topic}
    for commands in (True, False):
        variant = dataclasses.replace(spec, commands=commands, switch_allowed=commands)
        topics.update(spec.entity_topic(p, key) for key, p in platforms(variant).items())
    return topics


def retractions(spec: DiscoverySpec, announced_before: Sequence[str] | None) -> list[str]:
    """Topics to clear (empty retained message) before announcing ``spec``.

    ``announced_before`` is what the last run announced (None when unknown: then every topic of
    the other mode for ``spec`` is cleared). Clearing only what exists keeps Home Assistant
    2024.11+ from warning about a device message with nothing to remove."""
    current = set(announcements(spec))
    before = set(announced_before) if announced_before is not None else all_topics(spec)
    return sorted(before - current)
