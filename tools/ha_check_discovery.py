"""Check discovery messages with Home Assistant's own MQTT schemas (run in the HA venv).

Reads JSON lines ``{"topic": T, "payload": P}`` (P the message text) on stdin, the way Home
Assistant receives them on ``<prefix>/#``, and prints one JSON report: the HA version, the
entities accepted (platform, unique_id) and every error. Exit 0 when there is none.

Per-entity messages (``<prefix>/<platform>/[<node>/]<object>/config``) go through what the
installed Home Assistant does on receipt: its topic matcher, its abbreviation tables, its origin
schema, then the platform's ``DISCOVERY_SCHEMA``. A device message
(``<prefix>/device/<object>/config``, Home Assistant 2024.11+) is split into components as
2024.11's ``discovery.py`` does (``dev``, ``o`` and the shared availability/topic options merged
into each component; ``qos`` is not shared) and each component is then checked the same way, so
the platform schemas of the installed version judge every entity; a component holding nothing
but its platform is a removal there (its config is an empty payload) and is listed under
``removed``. HA's schemas silently drop unknown keys (``REMOVE_EXTRA``): a key dropped here is
reported as an error, since HA would ignore it without a word.

Never imported by the agent; ``make ha-venv`` installs the ``homeassistant`` package it needs.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

# Home Assistant 2023.x: importing mqtt first runs into a websocket_api <-> http import cycle that
# its loader never meets (persistent_notification is loaded before); do the same.
import homeassistant.components.persistent_notification  # noqa: F401
import voluptuous as vol
from homeassistant.components.mqtt import abbreviations, discovery, mixins
from homeassistant.const import __version__ as HA_VERSION  # noqa: N812 - the constant's meaning

try:  # 2024.3 keeps it in discovery.py; later versions in schemas.py
    ORIGIN_SCHEMA = discovery.MQTT_ORIGIN_INFO_SCHEMA
except AttributeError:  # pragma: no cover - depends on the installed version
    ORIGIN_SCHEMA = importlib.import_module("homeassistant.components.mqtt.schemas").MQTT_ORIGIN_INFO_SCHEMA

SUPPORTED = set(discovery.SUPPORTED_COMPONENTS)  # a list in 2023.x, a set later
# Home Assistant 2024.11 discovery.py, _merge_common_device_options: the options a device
# message shares with its components.
SHARED_OPTIONS = (
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "command_topic",
    "payload_available",
    "payload_not_available",
    "state_topic",
)
# Home Assistant 2024.11 abbreviations added for device messages.
DEVICE_MESSAGE_ABBREVIATIONS = {"cmps": "components", "p": "platform", "o": "origin", "dev": "device"}
ENTITY_PLATFORMS = SUPPORTED - {"device_automation", "tag"}
# Home Assistant 2024.11 schemas.py, DEVICE_DISCOVERY_SCHEMA (root of a device message).
DEVICE_MESSAGE_SCHEMA = mixins.MQTT_AVAILABILITY_SCHEMA.extend(
    {
        vol.Required("device"): mixins.MQTT_ENTITY_DEVICE_INFO_SCHEMA,
        vol.Required("components"): vol.Schema(
            {str: vol.Schema({vol.Required("platform"): vol.In(SUPPORTED)}, extra=vol.ALLOW_EXTRA)}
        ),
        vol.Required("origin"): ORIGIN_SCHEMA,
        vol.Optional("state_topic"): str,
        vol.Optional("command_topic"): str,
        vol.Optional("qos"): vol.In([0, 1, 2]),
        vol.Optional("encoding"): str,
    }
)


def _expand(payload: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(k, k): v for k, v in payload.items()}


def _expand_entity(payload: dict[str, Any]) -> dict[str, Any]:
    """Abbreviations as ``discovery.py`` replaces them on receipt."""
    out = _expand(payload, abbreviations.ABBREVIATIONS)
    if isinstance(out.get("device"), dict):
        out["device"] = _expand(out["device"], abbreviations.DEVICE_ABBREVIATIONS)
    if isinstance(out.get("origin"), dict):
        out["origin"] = _expand(out["origin"], abbreviations.ORIGIN_ABBREVIATIONS)
    return out


def check_entity(where: str, platform: str, payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(validated config, errors) for one entity config as its platform's schema sees it."""
    errors: list[str] = []
    config = _expand_entity(payload)
    if platform not in SUPPORTED:
        return {}, [f"{where}: platform {platform!r} is not supported by Home Assistant {HA_VERSION}"]
    if "origin" in config:
        try:
            ORIGIN_SCHEMA(config["origin"])
        except vol.Invalid as exc:
            errors.append(f"{where}: origin: {exc}")
    if platform in ENTITY_PLATFORMS and "unique_id" not in config:
        errors.append(f"{where}: no unique_id")
    module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
    try:
        validated = module.DISCOVERY_SCHEMA({**config, "platform": "mqtt"})
    except vol.Invalid as exc:
        return {}, [*errors, f"{where}: {exc}"]
    dropped = sorted(set(config) - set(validated) - {"platform"})
    if dropped:
        errors.append(f"{where}: keys Home Assistant {HA_VERSION} ignores: {', '.join(dropped)}")
    return validated, errors


Part = tuple[str, str, dict[str, Any]]
"""(where, platform, config) of one entity."""


def split_device_message(where: str, payload: dict[str, Any]) -> tuple[list[Part], list[str]]:
    """The components of a device message, merged as Home Assistant 2024.11 merges them; a
    removal (platform only) is left unmerged, an empty config, as 2024.11 leaves it."""
    message = _expand(payload, DEVICE_MESSAGE_ABBREVIATIONS)
    if isinstance(message.get("device"), dict):
        message["device"] = _expand(message["device"], abbreviations.DEVICE_ABBREVIATIONS)
    if isinstance(message.get("origin"), dict):
        message["origin"] = _expand(message["origin"], abbreviations.ORIGIN_ABBREVIATIONS)
    components = message.get("components")
    if isinstance(components, dict):
        message["components"] = {
            k: _expand(v, {**abbreviations.ABBREVIATIONS, "p": "platform"}) if isinstance(v, dict) else v
            for k, v in components.items()
        }
    try:
        DEVICE_MESSAGE_SCHEMA(message)
    except vol.Invalid as exc:
        return [], [f"{where}: device message: {exc}"]
    out = []
    for key, raw in message["components"].items():
        component = dict(raw)
        platform = component.pop("platform")
        if not component:
            out.append((f"{where} component {key}", platform, component))
            continue
        component["device"] = message["device"]
        component["origin"] = message["origin"]
        for option in SHARED_OPTIONS:
            if option in message and option not in component:
                component[option] = message[option]
        out.append((f"{where} component {key}", platform, component))
    return out, []


def check_message(
    prefix: str, topic: str, text: str, removed: list[dict[str, str]] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    if not topic.startswith(prefix + "/"):
        return [], []
    match = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1 :])
    if match is None:
        return [], [f"{topic}: not a discovery topic Home Assistant accepts"]
    platform = match.group("component")
    if not text:
        return [], []  # a removal
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return [], [f"{topic}: not JSON: {exc}"]
    if platform == "device":
        parts, errors = split_device_message(topic, payload)
    else:
        parts, errors = [(topic, platform, payload)], []
    entities = []
    for where, plat, config in parts:
        if not config:  # a device message's removal of one component
            if removed is not None:
                removed.append({"platform": plat, "where": where})
            continue
        validated, problems = check_entity(where, plat, config)
        errors += problems
        if validated:
            entities.append({"platform": plat, "unique_id": validated.get("unique_id"),
                             "qos": validated.get("qos"), "expire_after": validated.get("expire_after"),
                             "availability_topic": validated.get("availability_topic")})
    return entities, errors


def main() -> int:
    prefix = sys.argv[1] if len(sys.argv) > 1 else "homeassistant"
    entities: list[dict[str, Any]] = []
    errors: list[str] = []
    removed: list[dict[str, str]] = []
    for line in sys.stdin:
        if line.strip():
            message = json.loads(line)
            found, problems = check_message(prefix, message["topic"], message["payload"], removed)
            entities += found
            errors += problems
    report = {"home_assistant": HA_VERSION, "entities": entities, "removed": removed, "errors": errors}
    print(json.dumps(report))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
