"""Typed configuration (schema v1): one YAML file, unknown keys refused, every error located.

Sections are small pydantic models, each with bounds and a description, so the JSON Schema
(`emotion-agent config-schema`) and the reference in docs/ come from one source. Cross-field
rules are named ``verify_*`` functions that say which key, what was found and how to fix it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agent import state_dir, strict_yaml
from agent.analytics.settings import AnalyticsConfig
from agent.audit.settings import AuditConfig
from agent.camera.settings import CameraConfig
from agent.crypto.settings import KeysConfig
from agent.errors import ConfigError, shown
from agent.outputs.settings import OutputsConfig
from agent.privacy.settings import PolicyConfig, RetentionConfig, SiteConfig
from agent.settings_base import (
    CONFIG_FOLDER,
    ConfigPath,
    KeyNamer,
    Section,
    named_problems,
    validation_problems,
)
from agent.transport.settings import MqttConfig
from agent.user_files import folder_as_named, read_user_text
from agent.vision.settings import VisionConfig

SCHEMA_VERSION = 1


_DEVICE_ID = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"

RESERVED_DEVICE_IDS: dict[str, str] = {
    "homeassistant": "the broker ACL gives this username Home Assistant's rights "
    "(every device's topics, commands to all of them)",
    "emotion-agent-fleet": "the broker ACL gives this username the fleet receiver's rights "
    "(every device's topics, cosignatures, the site rollups)",
    "emotion-agent-auditor": "the broker ACL gives this username read access to every device's "
    "topics (a recording for `emotion-agent verify`)",
    "site": "emotion-agent/site/ holds the fleet's site rollups, which a device of this name "
    "could write (its own topics are emotion-agent/<device id>/)",
}
"""Device ids no device may have, and why. A device id is the CN of its client certificate and so
its MQTT username; firmware_config/mosquitto-emotion-agent.acl gives these names other clients'
rights (tests/deploy/test_provision.py keeps the ACL's special names and this list equal)."""


class AgentConfig(Section):
    """The whole file. Contract keys are documented in DESIGN.md; more may be added."""

    schema_version: Literal[1] = Field(
        1, title="Config schema version",
        description="Always 1 today; older documents are migrated in order, newer ones refused.",
    )
    device_id: Annotated[str, Field(pattern=_DEVICE_ID)] = Field(
        ..., title="Device id: lower-case letters, digits, dashes; used in topics",
        description="Names this device in every topic, signed message and audit entry (1-63 characters); "
        f"it is also the device's MQTT username, so none of {', '.join(RESERVED_DEVICE_IDS)} "
        "(the broker ACL's other clients).",
    )
    site: SiteConfig = Field(
        default_factory=SiteConfig,
        description="Jurisdiction, context, purpose and consent: the policy engine decides from them.",
    )
    camera: CameraConfig = Field(
        default_factory=CameraConfig,
        description="Which camera or file is read, how fast, and how a lost camera is retried.",
    )
    vision: VisionConfig = Field(
        default_factory=VisionConfig,
        description="Face detector, quality gate, emotion model and the CPU they may use.",
    )
    analytics: AnalyticsConfig = Field(
        default_factory=AnalyticsConfig,
        description="Windows, k-anonymity, tracking, differential privacy and alert rules.",
    )
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig,
        description="The broker, TLS, the offline spool, Home Assistant discovery and commands.",
    )
    keys: KeysConfig = Field(
        default_factory=KeysConfig,
        description="The device's signing key.",
    )
    outputs: OutputsConfig = Field(
        default_factory=OutputsConfig,
        description="Where signed messages go besides MQTT (a JSON-lines file or stdout).",
    )
    state_dir: ConfigPath = Field(
        Path("/var/lib/emotion-agent"),
        title="State folder: spool, audit log, counters; never pixels",
        description="Created 0700 for the service user; system folders are refused.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="How long unsent messages, audit segments and local statistics are kept.",
    )
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description="Active hours, privacy zones, the smallest face analysed and privacy mode.",
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig, title="Audit log checkpoints and segments",
        description="When the audit log signs a checkpoint and starts a new segment.",
    )

    @field_validator("device_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        problem = reserved_device_id_problem("device_id", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("state_dir")
    @classmethod
    def _own_folder(cls, value: Path) -> Path:
        problem = state_dir.path_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> AgentConfig:
        problems = [p for rule in CROSS_FIELD_RULES for p in rule(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def verify_brightness_range(cfg: AgentConfig) -> list[str]:
    q = cfg.vision.quality
    if q.min_brightness >= q.max_brightness:
        return [
            f"vision.quality.min_brightness ({q.min_brightness}) must be below "
            f"vision.quality.max_brightness ({q.max_brightness})"
        ]
    return []


def verify_mqtt_credentials(cfg: AgentConfig) -> list[str]:
    m = cfg.mqtt
    if m.password_file is not None and m.username is None:
        return ["mqtt.password_file is set but mqtt.username is not: set both or neither"]
    if m.tls is not None and (m.tls.cert is None) != (m.tls.key is None):
        return ["mqtt.tls.cert and mqtt.tls.key go together: set both or neither"]
    return []


def verify_frame_period(cfg: AgentConfig) -> list[str]:
    """The time between two analysed frames (1 / camera.fps) against what needs several frames:
    the tracker forgets a face not seen for ``forget_seconds``, so with frames further apart
    every track is new at each frame, never moves and never counts (nobody is ever counted);
    and a window shorter than a frame period holds no frame at all every so often."""
    period = 1 / cfg.camera.fps
    forget = cfg.analytics.tracker.forget_seconds
    window = cfg.analytics.window_seconds
    problems = []
    if period > forget:
        problems.append(
            f"camera.fps ({cfg.camera.fps:g}) analyses one frame every {period:g} s, longer than "
            f"analytics.tracker.forget_seconds ({forget}): every face is forgotten before the next "
            f"frame, so no one is ever counted; set camera.fps to at least {1 / forget:g} or "
            f"analytics.tracker.forget_seconds to at least {period:g}"
        )
    if period > window:
        problems.append(
            f"analytics.window_seconds ({window}) is shorter than the {period:g} s between two "
            f"frames at camera.fps ({cfg.camera.fps:g}): some windows would hold no frame; set "
            f"camera.fps to at least {1 / window:g} or window_seconds to at least {math.ceil(period)}"
        )
    return problems


CROSS_FIELD_RULES: list[Callable[[AgentConfig], list[str]]] = [
    verify_brightness_range,
    verify_mqtt_credentials,
    verify_frame_period,
]


# --- loading ----------------------------------------------------------------------------------


def parse_config(
    text: str, source: str = "<config>", folder: Path | None = None, name: KeyNamer | None = None
) -> AgentConfig:
    """Parse and validate YAML text; raise ConfigError listing every problem with its line.

    The YAML is read by ``agent.strict_yaml`` (no aliases, no duplicate keys, bounded) and
    validated strictly: a boolean is never an int, a string never a number. Relative paths in
    it are joined to ``folder`` (the config file's, absolute), or kept as written without one.
    ``name`` names a problem's key where the text was not written by a person (provisioning's,
    from a site file): by default, as this text writes it, at its line."""
    data, lines = strict_yaml.parse(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping of keys to values")
    version = data.get("schema_version", SCHEMA_VERSION)
    data = migrate(data, version, source)
    try:
        context = {CONFIG_FOLDER: folder} if folder is not None else None
        return AgentConfig.model_validate_json(json.dumps(data), strict=True, context=context)
    except ValidationError as exc:
        if name is not None:
            problems = named_problems(exc, AgentConfig, name)
        else:
            problems = validation_problems(exc, lines, source, AgentConfig)
        raise ConfigError(f"{source}: {len(problems)} problem(s) in the config", problems) from exc


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""Ordered upgrades: MIGRATIONS[n] turns a schema n document into schema n + 1."""


def migrate(data: dict[str, Any], version: object, source: str) -> dict[str, Any]:
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"{source}: schema_version must be an integer (found {shown(version)})")
    if version > SCHEMA_VERSION or version < 1:
        raise ConfigError(
            f"{source}: schema_version {version} is not supported; "
            f"this agent reads versions 1 to {SCHEMA_VERSION}"
        )
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = SCHEMA_VERSION
    return data


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a config file; a relative path in it is read from the file's folder
    (``agent.settings_base.in_config_folder``), wherever the command was started."""
    p = Path(path)
    folder = folder_as_named(p.parent)  # symbolic links named are not followed
    return parse_config(read_user_text(p, "config file", ConfigError), str(p), folder)


def json_schema() -> dict[str, Any]:
    return AgentConfig.model_json_schema()


def iter_fields(model: type[BaseModel], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Yield (dotted key, field info) for every leaf, for generated docs."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from iter_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def is_valid_device_id(value: str) -> bool:
    return re.fullmatch(_DEVICE_ID, value) is not None


def reserved_device_id_problem(key: str, value: str) -> str | None:
    """What is wrong with ``value`` as the device id set by ``key``, if it is a reserved one."""
    why = RESERVED_DEVICE_IDS.get(value)
    if why is None:
        return None
    return f"{key} {value!r} is reserved: {why}; give the device another name"
