"""The receiver's config (``emotion-agent collect -c fleet.yaml``): its own file, not the agent's.

One YAML file per receiver replica; replicas of one fleet share ``database`` and differ in
``receiver_id`` (and their signing key). Unknown keys are errors, as in the agent's config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from agent import strict_yaml
from agent.crypto.settings import KeyPath
from agent.errors import ConfigError, shortened, shown
from agent.fleet.store import SQLITE, sqlite_path
from agent.settings_base import (
    CONFIG_FOLDER,
    ConfigPath,
    Section,
    host_problem,
    in_config_folder,
    validation_problems,
)
from agent.state_dir import SYSTEM_FOLDERS, path_problem
from agent.user_files import folder_as_named, read_user_text

_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class BrokerTlsSettings(Section):
    ca: ConfigPath = Field(
        ..., title="CA certificate", description="PEM file that signed the broker's certificate."
    )
    cert: ConfigPath | None = Field(None, title="Client certificate", description="PEM client certificate.")
    key: ConfigPath | None = Field(
        None, title="Client key", description="PEM private key of the certificate."
    )


class MqttSourceSettings(Section):
    kind: Literal["mqtt"] = Field(..., title="Source kind", description="An MQTT 5 broker (or cluster).")
    host: str = Field("127.0.0.1", min_length=1, title="Broker host", description="Name or address.")
    port: int = Field(8883, ge=1, le=65535, title="Broker port", description="8883 with TLS, 1883 without.")
    tls: BrokerTlsSettings | None = Field(None, title="TLS", description="Omit only for a loopback broker.")
    username: str | None = Field(None, title="Username", description="Broker user of this receiver.")
    password_file: ConfigPath | None = Field(
        None, title="Password file", description="First line is the password; never inline."
    )
    share_group: str = Field(
        "emotion-agent-receivers",
        title="Shared-subscription group",
        description="Replicas in one group split the device topics ($share/<group>/...). Retained "
        "topics (key, key-rotation, audit/checkpoint) are subscribed plainly by every replica, "
        "since brokers do not send retained messages to shared subscriptions.",
    )

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        problem = host_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return value

    @field_validator("share_group")
    @classmethod
    def _level(cls, value: str) -> str:
        if not _TOPIC_LEVEL.match(value):
            raise ValueError(f"{value!r}: one topic level of letters, digits, '-' or '_'")
        return value


NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_USERINFO = re.compile(r"^([^:/?#]+://)?.*@", re.DOTALL)


def _without_userinfo(url: str) -> str:
    """``url`` fit for an error: all up to its last '@' replaced by ``***`` (a password holding
    '/' or '#' ends the authority early for the parser, so only the last '@' is sure to be past it)."""
    return _USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", url, count=1)


USERINFO_CHARACTERS = (  # nats-py sends a password as written: %2F would be three characters of it
    "its host or port cannot be read: a user name or password in a NATS URL cannot hold '/', '?', "
    "'#', '[' or ']'"
)


def nats_server_problem(url: str) -> str | None:
    """Why nats-py cannot connect to ``url``, or None. Read as nats-py reads it (no scheme:
    nats://, no port: 4222, the scheme matched as written, in lower case); it raised only when
    connecting, which the receiver took for a server away and retried for ever."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme not in NATS_SCHEMES:
        schemes = ", ".join(s + "://" for s in NATS_SCHEMES)
        return f"scheme {scheme!r} is not one of {schemes} (in lower case, as nats-py reads them)"
    full = url if sep else f"nats://{url}"
    try:
        parts = urlsplit(full)
        port = parts.port
    except ValueError:
        return _unreadable(full)
    if "@" in url and parts.username is None and parts.scheme in ("nats", "tls"):
        return USERINFO_CHARACTERS  # the '@' is past the host (these URLs have no path)
    if port == 0:
        return "port 0 is no server's; the default is 4222"
    return _nats_host_problem(parts.hostname)


def _nats_host_problem(host: str | None) -> str | None:
    if not host:
        return "names no host"
    if host == "none":
        return "host 'none' is refused by nats-py (a YAML None?)"
    problem = host_problem(host)
    return f"host {problem}" if problem else None


def _unreadable(url: str) -> str:
    """What makes ``urlsplit`` refuse ``url``: its user name or password, if it reads with them
    replaced, else its port or an IPv6 bracket."""
    if "@" in url:
        try:
            urlsplit(_USERINFO.sub(lambda m: f"{m.group(1) or ''}user:password@", url, count=1)).port  # noqa: B018
        except ValueError:
            pass
        else:
            return USERINFO_CHARACTERS
    return "its port is not a number from 1 to 65535 (or an IPv6 bracket is unclosed)"


class NatsSourceSettings(Section):
    kind: Literal["nats"] = Field(..., title="Source kind", description="NATS with JetStream.")
    servers: list[str] = Field(
        ["nats://127.0.0.1:4222"], min_length=1, title="Servers", description="Seed URLs of the cluster."
    )
    stream: str = Field(
        "EMOTION_AGENT",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        title="Stream",
        description="JetStream stream that holds the device subjects (made if missing).",
    )
    replicas: int = Field(3, ge=1, le=5, title="Stream replicas", description="Copies kept by the cluster.")
    durable: str = Field(
        "receivers",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        title="Durable consumer",
        description="Pull consumer shared by every replica: each message goes to one of them.",
    )
    ack_wait_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        title="Ack wait (s)",
        description="A message not acknowledged in this time (its receiver died) is delivered again.",
    )

    @field_validator("servers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for n, url in enumerate(value):
            problem = nats_server_problem(url)
            if problem:
                raise ValueError(
                    f"server {n + 1}, {shown(_without_userinfo(url))}: {problem} "
                    "(e.g. nats://nats-1.example:4222)"
                )
        web = [url.startswith(("ws://", "wss://")) for url in value]  # the scheme checked above
        if any(web) and not all(web):
            raise ValueError(
                "mixes ws:// or wss:// servers with nats:// or tls:// ones; nats-py takes one kind"
            )
        return value


class RegistrySettings(Section):
    keys_dir: ConfigPath | None = Field(
        None,
        title="Device public keys",
        description="A folder of <device_id>.jwk files (from `emotion-agent keygen`).",
    )
    trust_first_seen: bool = Field(
        False,
        title="Trust keys first seen on the key topic",
        description="Accept a device's retained `key` announcement when no key is provisioned for it "
        "(trust on first use); later keys only through signed key-rotation notices.",
    )


class WitnessSettings(Section):
    enabled: bool = Field(True, title="Witness checkpoints", description="Cosign consistent checkpoints.")
    name: str = Field(
        "witness.emotion-agent.local",
        pattern=r"^[^\s+]{1,128}$",
        title="Witness name",
        description="Key name on cosignature lines (a schema-less URL by C2SP convention).",
    )
    key: KeyPath | None = Field(
        None,
        title="Witness private key",
        description="Ed25519 PEM (`emotion-agent keygen`); shared by replicas. Read as private_key.",
    )


class HttpSettings(Section):
    host: str = Field("127.0.0.1", title="Listen address", description="0.0.0.0 to serve other hosts.")
    port: int = Field(
        9108, ge=0, le=65535, title="Port", description="/metrics, /healthz and the page; 0: off."
    )


class RollupSettings(Section):
    sites: dict[str, list[str]] = Field(
        default_factory=dict,
        title="Sites",
        description="Site id -> its device ids.",
    )
    grace_seconds: int = Field(
        120,
        ge=0,
        le=86_400,
        title="Grace (s)",
        description="How long after a window ends a site waits for late devices before summing.",
    )


class FleetSettings(Section):
    schema_version: Literal[1] = Field(1, title="Schema version", description="Always 1.")
    receiver_id: str = Field(..., title="Receiver id", description="Unique per replica; used in topics.")
    source: Annotated[MqttSourceSettings | NatsSourceSettings, Field(discriminator="kind")] = Field(
        ..., title="Where messages come from", description="kind: mqtt or nats."
    )
    database: str = Field(
        "sqlite:////var/lib/emotion-agent-fleet/fleet.db",
        title="Database",
        description="SQLite for one site: sqlite:////FULL/PATH (four slashes) or sqlite:///PATH "
        "(relative: beside this file); postgresql://... for several replicas.",
    )
    state_dir: ConfigPath = Field(
        Path("/var/lib/emotion-agent-fleet"),
        title="State folder",
        description="The receiver's own boot and sequence counters.",
    )
    private_key: KeyPath = Field(
        ...,
        title="Receiver key",
        description="Ed25519 PEM that signs rollups. A bare file name is looked up in "
        "$CREDENTIALS_DIRECTORY first (systemd), then in the config file's folder.",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings, title="Device registry", description=""
    )
    witness: WitnessSettings = Field(default_factory=WitnessSettings, title="Witness", description="")
    http: HttpSettings = Field(default_factory=HttpSettings, title="HTTP", description="Metrics and page.")
    rollup: RollupSettings = Field(default_factory=RollupSettings, title="Site rollups", description="")
    max_skew_seconds: int = Field(
        300, ge=0, le=86_400, title="Clock skew (s)", description="How far ahead of arrival a ts may be."
    )

    @field_validator("receiver_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"{value!r}: lower-case letters, digits and dashes, at most 63")
        return value

    @field_validator("state_dir")
    @classmethod
    def _own_folder(cls, value: Path) -> Path:
        problem = path_problem(value, example="/var/lib/emotion-agent-fleet")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("database")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        """A SQLite file is read as every path key (``~`` refused, relative beside the config
        file), after ``sqlite_path_problem``; the URL keeps SQLAlchemy's form (``Store``)."""
        if not value.startswith((SQLITE, "postgresql://", "postgres://")):
            raise ValueError(
                f"{value!r}: use sqlite:////FULL/PATH, sqlite:///PATH (beside this file) or "
                "postgresql://..."
            )
        path = sqlite_path(value)
        if path is None:
            return postgres_files_in_folder(value, info)
        problem = sqlite_path_problem(value)
        if problem:
            raise ValueError(problem)
        full = in_config_folder(path, info)
        return value if full == path else f"{SQLITE}{full}"


POSTGRES_FILE_OPTIONS = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "passfile")
"""The libpq connection options that name a file or folder (PostgreSQL 15's list)."""


def postgres_files_in_folder(url: str, info: ValidationInfo) -> str:
    """The URL with each relative file option read from the config file's folder, as every path
    key (libpq reads them from the working folder: / under systemd); ``~`` refused. Only those
    values are rewritten (percent-encoded again); the rest of the URL is kept as written."""
    base, mark, query = url.partition("?")
    if not mark:
        return url
    options = []
    for written_option in query.split("&"):
        option = written_option
        name, eq, raw = option.partition("=")
        if eq and name in POSTGRES_FILE_OPTIONS and raw and unquote(raw) != "system":
            written = Path(unquote(raw))
            try:
                full = in_config_folder(written, info)
            except ValueError as exc:
                raise ValueError(f"{name} {exc}") from exc
            if full != written:
                option = f"{name}={quote(str(full), safe='/')}"
        options.append(option)
    return f"{base}?{'&'.join(options)}"


def sqlite_path_problem(url: str) -> str | None:
    """Why a SQLite URL cannot be meant as written. ``sqlite:///var/lib/...`` is the relative path
    var/lib/... (the docs and the default said so before the default had its fourth slash): it
    found /var/lib/... only when started in /, and read beside the config file it would be a new,
    empty database (every device key learnt and every stored sequence number gone)."""
    rest = url.removeprefix(SQLITE)
    if not rest:
        return f"{shown(url)} names no file; e.g. sqlite:////var/lib/emotion-agent-fleet/fleet.db"
    top = rest.split("/", 1)[0]
    if top and f"/{top}" in SYSTEM_FOLDERS:  # top is empty for a full path (four slashes)
        path = shortened(rest)
        return (
            f"{shown(url)} names the relative path {path}, read from the config file's folder; for "
            f"/{path} write four slashes (sqlite:////{path}), for a folder {top} beside this file "
            f"write sqlite:///./{path}"
        )
    return None


def load_fleet_settings(path: Path) -> FleetSettings:
    """Read and validate a receiver config; ConfigError naming each bad key. Validated strictly,
    as the agent's config (``agent.config.parse_config``): ``port: "8883"`` or ``enabled: "yes"``
    is refused at its key, not coerced. A relative path in it is read from the file's folder
    (``agent.settings_base.in_config_folder``): systemd starts the receiver in /."""
    text = read_user_text(path, "fleet config", ConfigError)
    folder = folder_as_named(path.parent)  # symbolic links named are not followed (load_config)
    data, lines = strict_yaml.parse(text, str(path))  # no aliases, no duplicate keys, bounded
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of keys to values")
    try:
        # through JSON: strict mode takes a path as text there, as it comes from YAML
        context = {CONFIG_FOLDER: folder}
        return FleetSettings.model_validate_json(json.dumps(data), strict=True, context=context)
    except ValidationError as exc:
        problems = validation_problems(exc, lines, str(path), FleetSettings)  # as the agent's
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the fleet config", problems) from exc
