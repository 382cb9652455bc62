"""One device's provisioning bundle: the files, their modes and owners, and checksums.

The bundle is what lands in ``emotion-agent/`` on the boot partition. FAT keeps no Unix
modes, so ``MANIFEST`` declares them ("MODE OWNER GROUP NAME") and the first-boot importer
applies them; ``SHA256SUMS`` lets it refuse a truncated or edited card.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.clock import SystemClock
from agent.config import AgentConfig, parse_config
from agent.errors import ConfigError, shortened, shown
from agent.privacy.policy import PolicyRefused, require_allowed, site_today
from agent.provision.keys import SigningKey, TlsIdentity, new_signing_key, new_tls_identity
from agent.provision.site import SiteFile
from agent.settings_base import KeyNamer, dotted
from agent.strict_yaml import YamlRefused

ETC = Path("/etc/emotion-agent")
SERVICE_GROUP = "emotion-agent"
BUNDLE_DIR = "emotion-agent"
MANIFEST = "MANIFEST"
SUMS = "SHA256SUMS"
TLS_FILES = {"ca": "ca.crt", "cert": "client.crt", "key": "client.key"}
STATE = Path("/var/lib/emotion-agent")
"""The one folder the service may write: the unit's StateDirectory= under ProtectSystem=strict."""
Key = tuple[str | int, ...]
WRITTEN: dict[Key, str] = {
    ("state_dir",): f"leave state_dir out (its default is {STATE}) or ",
    ("outputs", "jsonl"): "",
}
"""The device config's path keys the service writes, and what to offer besides a path under STATE."""
FROM_SITE: dict[Key, tuple[tuple[str, ...], str]] = {
    ("device_id",): (("device_name",), "name the device there (or a series: device_prefix, --batch)"),
    ("site",): (("site",), "write the section there, at the top level"),
    ("mqtt", "host"): (("broker", "host"), "write it there instead"),
    ("mqtt", "port"): (("broker", "port"), "write it there instead"),
    ("mqtt", "username"): (("username",), "write it there instead (by default the device id)"),
    ("mqtt", "tls", "ca"): (
        ("broker", "ca_cert"), f"name the CA file on this computer there (installed as {ETC}/ca.crt)"
    ),
}
"""The device config keys provisioning sets from another key of the site file: that key, and
what to write there."""
OWN_VALUES: dict[Key, str] = {
    ("schema_version",): "the schema version this agent reads",
    ("mqtt", "tls", "cert"): f"the device's own client certificate, {ETC}/client.crt (signed by "
    "lab_ca, or by the site CA from the bundle's client.csr)",
    ("mqtt", "tls", "key"): f"the device's own client key, {ETC}/client.key, made with its bundle",
    ("keys", "private_key"): "the device's own signing key, device.key, made with its bundle "
    "(a systemd credential)",
}
"""The device config keys provisioning sets from no site file key, and what it sets them to."""
TOO_LARGE = (
    "It holds this section, the site section and the keys provisioning sets, written in block "
    "style (one list item a line, indented), so it can be over a limit the site file is under; "
    "make agent: smaller"
)
"""Why a site file the YAML reader takes can give a device config it refuses as too large."""


@dataclass(frozen=True)
class BundleFile:
    name: str
    data: bytes = field(repr=False)
    mode: int
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class Bundle:
    device_id: str
    signing: SigningKey
    tls: TlsIdentity
    files: tuple[BundleFile, ...]

    def verifier_line(self) -> str:
        """One JSON line for the facility's list of trusted device keys."""
        return json.dumps({"device_id": self.device_id, "kid": self.signing.kid, "jwk": self.signing.jwk},
                          separators=(",", ":"), sort_keys=True)

    def all_files(self) -> list[tuple[str, bytes]]:
        """The files to write, MANIFEST and SHA256SUMS included, in a stable order."""
        manifest = f"# emotion-agent bundle: MODE OWNER GROUP NAME, each installed as {ETC}/NAME\n"
        manifest += "".join(f"{f.mode:04o} {f.owner} {f.group} {f.name}\n" for f in self.files)
        out = [(f.name, f.data) for f in self.files] + [(MANIFEST, manifest.encode())]
        sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in out)
        return [*out, (SUMS, sums.encode())]


def device_ids(site: SiteFile, batch: int | None, first: int = 1) -> list[str]:
    """The device name, or ``<prefix>-01`` .. for a batch (wider numbers past 99)."""
    if batch is None:
        if site.device_name is None:
            raise ConfigError("the site file sets device_prefix only: give --batch N to name devices")
        return [site.device_name]
    prefix = site.device_prefix
    if prefix is None:
        raise ConfigError("--batch needs device_prefix in the site file (it has device_name only)")
    last = first + batch - 1
    width = max(2, len(str(last)))
    names = [f"{prefix}-{i:0{width}d}" for i in range(first, last + 1)]
    too_long = [n for n in names if len(n) > 63]
    if too_long:
        raise ConfigError(f"device id {too_long[0]!r} is longer than 63 characters: shorten device_prefix")
    return names


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def render_config(site: SiteFile, device_id: str, has_cert: bool) -> str:
    """The device's agent.yaml; validated with the agent's schema before it is written, as the
    device reads it (from /etc/emotion-agent), and refused if a path in it is relative."""
    owned: dict[str, Any] = {
        "schema_version": 1,
        "device_id": device_id,
        "site": site.site,
        "mqtt": {
            "host": site.broker.host,
            "port": site.broker.port,
            "username": site.username or device_id,
            "tls": {name: str(ETC / f"{file}") for name, file in TLS_FILES.items()},
        },
        "keys": {"private_key": "device.key"},
    }
    problems = provisioned_key_problems(site, owned)
    if problems:
        raise ConfigError(
            f"{site.where(('agent',))}: {len(problems)} key(s) under agent: that provisioning sets",
            problems,
        )
    data = _merge(site.agent, owned)  # no vision.models_dir: the installed package carries the models
    cert_note = "" if has_cert else (
        "# mqtt.tls.cert: have the site CA sign client.csr and put it at /etc/emotion-agent/client.crt\n"
    )
    text = (
        f"# agent config for {device_id}, written by `emotion-agent provision` "
        f"on {dt.datetime.now(dt.UTC):%Y-%m-%d}.\n"
        "# keys.private_key is a bare name: systemd passes it in as a credential (LoadCredential=).\n"
        f"{cert_note}" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    )
    source, name = f"{device_id}/agent.yaml", _named_in(site)  # it is not written if invalid
    try:
        cfg = parse_config(text, source, ETC, name)  # as the device reads it
        as_written = parse_config(text, source, None, name)
    except YamlRefused as exc:  # YAML written here: only the reader's size limits refuse it
        raise ConfigError(
            f"the site file's agent keys give {device_id} a config too large for the agent to read",
            [f"agent ({site.where(('agent',))}): the config built from it: {exc.why}. {TOO_LARGE}"],
        ) from exc
    except ConfigError as exc:
        raise ConfigError(
            f"the site file's agent keys give {device_id} an invalid config", exc.problems
        ) from exc
    problems = relative_path_problems(site, as_written, cfg)
    problems += outside_state_problems(site, as_written)  # as written: a relative one is said above
    if problems:
        raise ConfigError(
            f"{site.where(())}: {len(problems)} path(s) under agent: that {device_id} cannot use",
            problems,
        )
    try:
        require_allowed(cfg, site_today(cfg, SystemClock()))  # a signage date after today too, as `run`
    except PolicyRefused as exc:
        raise ConfigError(f"{device_id} would refuse to start: {exc}") from exc
    return text


def provisioned_key_problems(site: SiteFile, owned: dict[str, Any]) -> list[str]:
    """Each key of the site file's agent: section that ``owned`` (what provisioning sets) would
    replace, at its line, with the site file key that sets it instead: an installer who writes
    ``mqtt: {host: other.example}`` expects it used or refused, never silently dropped."""
    problems = []
    for key, value in _replaced(site.agent, owned):
        if key in FROM_SITE:
            site_key, advice = FROM_SITE[key]
            how = f"from the site file's {'.'.join(site_key)}: {advice}"
        elif key in OWN_VALUES:
            how = f"to {OWN_VALUES[key]}: leave it out"
        else:  # a section provisioning writes into (mqtt, mqtt.tls, keys), given a non-mapping
            inside = [".".join(map(str, k)) for k in (*FROM_SITE, *OWN_VALUES) if k[: len(key)] == key]
            how = f"with {', '.join(inside)} in it: leave it out"
        found = "a mapping" if isinstance(value, dict) else shown(value)
        name = dotted(("agent", *key))
        problems.append(f"{name} ({site.where(('agent', *key))}): set by provisioning (found {found}) {how}")
    return problems


def _replaced(agent: dict[str, Any], owned: dict[str, Any], key: Key = ()) -> Iterator[tuple[Key, Any]]:
    """Each key of ``agent`` that ``_merge(agent, owned)`` would replace, with its value."""
    for name, value in owned.items():
        if name not in agent:
            continue
        here, mine = (*key, name), agent[name]
        sections = isinstance(value, dict) and isinstance(mine, dict)
        if here in FROM_SITE or here in OWN_VALUES or not sections:
            yield here, mine  # a value provisioning sets (site: whole), or a section as a non-mapping
        else:
            yield from _replaced(mine, value, here)


def _site_key(key: Key) -> Key:
    """The site file key that sets a device config key: the one provisioning fills it from
    (``mqtt.host``: ``broker.host``; ``site``: ``site``), else the same key under ``agent``."""
    for cut in range(len(key), 0, -1):
        if key[:cut] in FROM_SITE:
            return (*FROM_SITE[key[:cut]][0], *key[cut:])
    return ("agent", *key)


def _named_in(site: SiteFile) -> KeyNamer:
    """Names a device config key as the site file writes it, at its line there: a problem found
    in the config built from the site file (``agent.camera.fps (site.yml:31)``)."""

    def name(key: Key) -> str:
        at = _site_key(key)
        return f"{dotted(at)} ({site.where(at)})"

    return name


def relative_path_problems(site: SiteFile, as_written: AgentConfig, on_device: AgentConfig) -> list[str]:
    """Why each relative path of a device's config cannot work there, at its site file key.

    The device reads a relative path from its config's folder, /etc/emotion-agent: read-only to
    the service (ProtectSystem=strict) and holding only the bundle's files, so ``state_dir:
    state`` could not be written and a relative file would not be there. Such a path is found
    as a value the device reads differently from how it is written (a bare key name is not:
    systemd's credential), so every path key of the agent's schema is covered."""
    problems = []
    written, device = as_written.model_dump(mode="json"), on_device.model_dump(mode="json")
    for key, value, read_as in _read_differently(written, device):
        site_key = _site_key(key)
        there = shortened(str(read_as))
        problem = f"{shown(value)} is relative: on the device it is {there}, in its config's folder"
        if key in WRITTEN:
            example = shortened(str(STATE / Path(value).name))
            fix = f"{WRITTEN[key]}write a full path under {STATE}, e.g. {example}"
            problem += f", which the service cannot write (ProtectSystem=strict); {fix}"
        else:
            problem += (
                f"; write the full path it will have on the device (e.g. {there}, put there by "
                "hand: the bundle brings only its own files)"
            )
        problems.append(f"{dotted(site_key)} ({site.where(site_key)}): {problem}")
    return problems


def outside_state_problems(site: SiteFile, as_written: AgentConfig) -> list[str]:
    """Each key the service writes (``WRITTEN``) whose full path is outside ``STATE``: under
    ProtectSystem=strict the device would refuse to start (``is on a read-only file system``),
    and the bundle brings no drop-in (``ReadWritePaths=``) that could open another folder. A
    relative path is left to ``relative_path_problems``."""
    problems: list[str] = []
    device = as_written.model_dump(mode="json")
    for key, fix in WRITTEN.items():
        value: Any = device
        for part in key:
            value = value.get(str(part)) if isinstance(value, dict) else None
        if not isinstance(value, str) or not Path(value).is_absolute():
            continue  # unset, or relative (relative_path_problems says so)
        path = Path(os.path.normpath(value))
        if path == STATE or STATE in path.parents:
            continue
        site_key = _site_key(key)
        example = shortened(str(STATE / path.name))
        problems.append(
            f"{dotted(site_key)} ({site.where(site_key)}): {shown(value)} is outside {STATE}, the only "
            f"folder the service may write (ProtectSystem=strict, StateDirectory=): the device would "
            f"refuse to start; {fix}write a full path under {STATE}, e.g. {example} (a folder elsewhere "
            "needs a drop-in with ReadWritePaths= on the device, then set it there)"
        )
    return problems


def _read_differently(
    written: Any, device: Any, key: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """Each key of two dumps of one config whose values differ, with both values."""
    if isinstance(written, dict):
        for name, value in written.items():
            yield from _read_differently(value, device[name], (*key, name))
    elif isinstance(written, list):
        for index, (value, other) in enumerate(zip(written, device, strict=True)):
            yield from _read_differently(value, other, (*key, index))
    elif written != device:
        yield key, written, device


def build_bundle(
    site: SiteFile, device_id: str, ca_cert: bytes, lab_ca: tuple[bytes, bytes] | None
) -> Bundle:
    signing = new_signing_key()
    days = site.lab_ca.days if site.lab_ca is not None else 825
    tls = new_tls_identity(device_id, site.organization, lab_ca, days)
    files = [
        BundleFile("agent.yaml", render_config(site, device_id, tls.cert_pem is not None).encode(),
                   0o640, group=SERVICE_GROUP),
        BundleFile("device.key", signing.private_pem, 0o600),
        BundleFile("device.pub.jwk", (json.dumps(signing.jwk, indent=2) + "\n").encode(), 0o644),
        BundleFile("ca.crt", ca_cert, 0o644),
        BundleFile("client.key", tls.private_pem, 0o640, group=SERVICE_GROUP),
        BundleFile("client.csr", tls.csr_pem, 0o644),
    ]
    if tls.cert_pem is not None:
        files.append(BundleFile("client.crt", tls.cert_pem, 0o644))
    return Bundle(device_id, signing, tls, tuple(files))
