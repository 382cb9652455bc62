"""The site file an installer brings: which devices, which broker, which policy.

Its own paths (``broker.ca_cert``, ``lab_ca``) are relative to the site file's folder as named
(symbolic links not followed). ``agent`` holds any further agent config keys (camera, analytics,
policy, ...), validated by the agent's own schema when the config is built; their paths are the
device's, and the keys provisioning sets itself (device_id, mqtt.host, ...) are refused there,
each naming the site file key that sets it (``agent.provision.bundle``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from agent import strict_yaml
from agent.config import is_valid_device_id, reserved_device_id_problem
from agent.errors import ConfigError
from agent.settings_base import Section, host_problem, validation_problems
from agent.user_files import folder_as_named, read_user_text


class BrokerSite(Section):
    host: str = Field(
        ..., min_length=1, max_length=253, title="Broker host name or address",
        description="The name or address the devices reach it at, e.g. broker.example or 10.0.0.5.",
    )
    port: int = Field(
        8883, ge=1, le=65535, title="Broker TLS port",
        description="1-65535; the devices connect to it with TLS.",
    )
    ca_cert: Path = Field(
        ..., title="CA certificate (PEM) of the broker, copied onto the device",
        description="A file on this computer, relative to the site file's folder; installed as "
        "/etc/emotion-agent/ca.crt.",
    )

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        """Checked as the agent checks mqtt.host, which provisioning fills from it: refused here,
        at its own key, not once a device's config is built (where it read as mqtt.host)."""
        problem = host_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return value


class LabCa(Section):
    """Lab only: sign client certificates here instead of sending CSRs to the site's PKI."""

    cert: Path = Field(
        ..., title="Lab CA certificate (PEM)",
        description="A file on this computer, relative to the site file's folder; it signs each "
        "device's client certificate.",
    )
    key: Path = Field(
        ..., title="Lab CA private key (PEM, unencrypted)",
        description="A file on this computer, relative to the site file's folder; never copied to a device.",
    )
    days: int = Field(
        825, ge=1, le=3650, title="Validity of the client certificates (days)",
        description="1-3650 days from provisioning.",
    )


SITE_LINES = "site_lines"
"""Validation context key: the site file's name and line index (``load_site``)."""


class SiteFile(Section):
    device_name: str | None = Field(
        None, title="Device id of a single device", description="Lower-case letters, digits, dashes."
    )
    device_prefix: str | None = Field(
        None,
        title="Device id prefix for --batch",
        description="--batch N names the devices <prefix>-01 .. <prefix>-N.",
    )
    broker: BrokerSite = Field(
        ..., title="MQTT broker the devices publish to", description="host, port (8883) and ca_cert."
    )
    username: str | None = Field(
        None, max_length=128, title="MQTT username", description="Defaults to the device id."
    )
    organization: str | None = Field(
        None, max_length=64, title="Organisation (O=) in the client certificate request",
        description="At most 64 characters; left out of the certificate when unset.",
    )
    site: dict[str, Any] = Field(
        default_factory=dict,
        title="The agent config's site section",
        description="Jurisdiction, context, purpose, signage, consent: validated by the agent's schema.",
    )
    agent: dict[str, Any] = Field(
        default_factory=dict,
        title="Further agent config keys",
        description="Merged into every device's agent.yaml (camera, vision, analytics, ...).",
    )
    lab_ca: LabCa | None = Field(
        None, title="Lab CA that signs client certificates directly",
        description="Lab only: cert, key and days; without it each bundle carries a client.csr for "
        "the site's PKI to sign.",
    )
    _source: str = PrivateAttr("<site file>")
    _lines: strict_yaml.LineIndex = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        """Keep where each key was written: a problem found only once a device's config is
        built from the site file (``render_config``) names the site file's line."""
        found = context.get(SITE_LINES) if isinstance(context, dict) else None
        if found is not None:
            self._source, self._lines = found

    def where(self, key: tuple[str | int, ...]) -> str:
        """``site.yml:12``: the file and the line of ``key`` (or of the nearest key holding it)."""
        line = next((self._lines[key[:n]] for n in range(len(key), 0, -1) if key[:n] in self._lines), None)
        return f"{self._source}:{line}" if line else self._source

    @field_validator("device_name", "device_prefix")
    @classmethod
    def _device_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not is_valid_device_id(value):
            raise ValueError(
                f"{info.field_name} {value!r} is not a device id: use lower-case letters, digits "
                "and dashes, starting and ending with a letter or digit"
            )
        problem = reserved_device_id_problem("device_name", value)
        if info.field_name == "device_name" and problem:  # a prefix names <prefix>-01 ..: never reserved
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _names(self) -> SiteFile:
        if self.device_name is None and self.device_prefix is None:
            raise ValueError("set device_name (one device) or device_prefix (a --batch series)")
        return self

    def resolve(self, base: Path) -> SiteFile:
        """Paths made absolute against the site file's folder."""
        broker = self.broker.model_copy(update={"ca_cert": base / self.broker.ca_cert})
        lab = None
        if self.lab_ca is not None:
            lab = self.lab_ca.model_copy(
                update={"cert": base / self.lab_ca.cert, "key": base / self.lab_ca.key}
            )
        return self.model_copy(update={"broker": broker, "lab_ca": lab})


def load_site(path: str | Path) -> SiteFile:
    """Read and validate a site file; ConfigError (exit 2) lists every problem with its line.
    A relative path in it is beside the file as named, symbolic links not followed, as in the
    agent's and the fleet's configs (a linked site file reads the files beside the link)."""
    p = Path(path)
    text = read_user_text(p, "site file", ConfigError)
    data, lines = strict_yaml.parse(text, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the site file must be a YAML mapping of keys to values")
    try:
        site = SiteFile.model_validate_json(
            json.dumps(data), strict=True, context={SITE_LINES: (str(p), lines)}
        )
    except ValidationError as exc:
        problems = validation_problems(exc, lines, str(p), SiteFile)  # its own keys' help
        raise ConfigError(f"{p}: {len(problems)} problem(s) in the site file", problems) from exc
    return site.resolve(folder_as_named(p.parent))  # as load_config: links named, not followed
