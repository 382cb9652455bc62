"""The site file (``provision --site``) is read as the agent's config: its errors describe its own
keys, and a relative path in it is beside the file as named, symbolic links not followed."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agent.errors import ConfigError
from agent.provision.site import SiteFile, load_site

SITE = "device_name: lobby-1\nbroker: {host: b, ca_cert: ca.crt}\n"


def test_an_error_at_a_key_the_agent_config_also_has_is_described_as_the_site_files(
    tmp_path: Path,
) -> None:
    """The help after a problem came from AgentConfig's keys, so ``site`` (a key of both) showed
    the agent config's description, not the site file's."""
    path = tmp_path / "site.yml"
    path.write_text(SITE + "site: EU\n")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert info.value.problems == [
        f"site ({path}:3): Input should be an object (found 'EU'). The agent config's site "
        "section: Jurisdiction, context, purpose, signage, consent: validated by the agent's schema."
    ]


@pytest.mark.parametrize("linked", ["folder", "file"])
def test_a_relative_path_is_beside_the_site_file_as_named(tmp_path: Path, linked: str) -> None:
    """The folder was found with Path.resolve(), which follows symbolic links, where the agent's
    and the fleet's configs take it as named (os.path.abspath): a site file reached through a
    linked folder named its files by the link's target, and a linked site file read the CA
    certificate beside its target instead of beside the link."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "site.yml").write_text(SITE + "lab_ca: {cert: lab/ca.crt, key: lab/ca.key}\n")
    named = tmp_path / "sites"
    if linked == "folder":
        named.symlink_to(real)
    else:
        named.mkdir()
        (named / "site.yml").symlink_to(real / "site.yml")
    site = load_site(named / "site.yml")
    assert site.broker.ca_cert == named / "ca.crt"
    assert site.lab_ca is not None
    assert (site.lab_ca.cert, site.lab_ca.key) == (named / "lab/ca.crt", named / "lab/ca.key")


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("broker..example", "has an empty label (a leading or double dot)"),
        ("a" * 64 + ".example", "has a label of 64 characters"),
        ("-broker.example", "has the label '-broker'"),
        ("[::1]", "has brackets; an IPv6 address is written without them (e.g. ::1)"),
    ],
)
def test_a_broker_host_that_is_no_host_name_is_refused_as_the_site_file_loads(
    tmp_path: Path, host: str, said: str
) -> None:
    """Only its length was checked here: the name was refused once a device's config was built,
    as ``mqtt.host 'broker..example' has an empty label`` at broker.host."""
    path = tmp_path / "site.yml"
    path.write_text(SITE.replace("host: b,", f"host: '{host}',"))
    with pytest.raises(ConfigError) as info:
        load_site(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"broker.host ({path}:2): {host!r} {said}; a host is an IP address"), problem
    assert "mqtt" not in problem


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "broker.example.", "mqtt_1.lan", "bröker.example"])
def test_a_broker_host_name_or_address_is_taken(tmp_path: Path, host: str) -> None:
    path = tmp_path / "site.yml"
    path.write_text(SITE.replace("host: b,", f"host: '{host}',"))
    assert load_site(path).broker.host == host


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    found = []
    for name, info in model.model_fields.items():
        found.append((prefix + name, info))
        inner = [t for t in (info.annotation, *get_args(info.annotation)) if isinstance(t, type)]
        for sub in inner:
            if issubclass(sub, BaseModel):
                found += _fields(sub, f"{prefix}{name}.")
    return found


@pytest.mark.parametrize(("key", "info"), _fields(SiteFile), ids=lambda v: v if isinstance(v, str) else "")
def test_every_site_file_key_has_the_help_an_error_at_it_shows(key: str, info: FieldInfo) -> None:
    """An error at broker.port or lab_ca.days named the key and what was wrong but said nothing of
    what the key is: the help line (``title: description``) comes from the description, which the
    broker's and the lab CA's keys lacked."""
    assert info.title, key
    assert info.description, key


def test_an_error_at_the_brokers_port_says_what_the_key_is(tmp_path: Path) -> None:
    path = tmp_path / "site.yml"
    path.write_text(SITE.replace("host: b,", "host: b, port: 0,"))
    with pytest.raises(ConfigError) as info:
        load_site(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"broker.port ({path}:2): Input should be greater than or equal to 1"), problem
    assert "Broker TLS port: " in problem, problem
