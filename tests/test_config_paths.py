"""Every path the config names is read the same way: ``~`` is refused at its key when the file
loads (nothing expands it), whether the key is typed as a path or as text; and a relative path is
read from the config file's folder, whoever reads the file (check-config, run and its reloads,
policy explain, analyze) and whatever folder they were started in (systemd starts the service
in /)."""

from __future__ import annotations

import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig, load_config, parse_config
from agent.crypto import generate_keypair
from agent.crypto.keys import beside_config
from agent.errors import ConfigError
from agent.fleet.settings import load_fleet_settings
from agent.provision.site import load_site

MINIMAL = "schema_version: 1\ndevice_id: lobby-1\n"

SETTINGS = {
    "state_dir": "state_dir: {}\n",
    "keys.private_key": "keys: {{private_key: {}}}\n",
    "mqtt.tls.ca": "mqtt: {{tls: {{ca: {}}}}}\n",
    "mqtt.tls.cert": "mqtt: {{tls: {{ca: /etc/ca.crt, cert: {}, key: /etc/c.key}}}}\n",
    "mqtt.tls.key": "mqtt: {{tls: {{ca: /etc/ca.crt, cert: /etc/c.crt, key: {}}}}}\n",
    "mqtt.password_file": "mqtt: {{username: u, password_file: {}}}\n",
    "mqtt.commands.operator_key": "mqtt: {{commands: {{operator_key: {}}}}}\n",
    "policy.privacy_mode.flag_file": "policy: {{privacy_mode: {{flag_file: {}}}}}\n",
    "vision.models_dir": "vision: {{models_dir: {}}}\n",
    "outputs.jsonl": "outputs: {{jsonl: {}}}\n",
    "camera.source": "camera: {{source: {}}}\n",
}
"""Each key that names a file or folder, and the YAML line that sets it."""
TEXT_PATHS = {"outputs.jsonl", "camera.source"}
"""Keys typed as text that hold a path (a file source, a JSON-lines file): not found by type."""


def types_in(annotation: Any) -> set[Any]:
    """``X``, and the types inside ``X | None``, ``list[X]``, ``Annotated[X, ...]``."""
    return {annotation}.union(*(types_in(arg) for arg in get_args(annotation)))


def path_typed_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        inner = types_in(info.annotation)
        sections = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        for section in sections:
            keys |= path_typed_keys(section, f"{prefix}{name}.")
        if Path in inner:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_path_key_of_the_config_is_covered_here() -> None:
    """A new path key joins SETTINGS, so every check below is made of it too."""
    assert path_typed_keys(AgentConfig) | TEXT_PATHS == set(SETTINGS)


def problem_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    (problem,) = info.value.problems
    return problem


@pytest.mark.parametrize("key", sorted(SETTINGS))
@pytest.mark.parametrize(("value", "example"), [("~/ea/x", "/home/pi/ea/x"), ("~ea/x", "/home/ea/x")])
def test_a_path_starting_with_a_tilde_is_refused_at_its_key(key: str, value: str, example: str) -> None:
    """outputs.jsonl: ~/stats.jsonl passed the load and failed only at start (or made a folder
    named ~); every path key now says so when the file loads, and what to write."""
    problem = problem_of(MINIMAL + SETTINGS[key].format(value))
    assert problem.startswith(
        f"{key} (c.yaml:3): starts with ~, which is not expanded (found {value!r}); "
        f"write the full path, e.g. {example}"
    ), problem


def test_a_named_users_tilde_shows_that_users_home() -> None:
    """~root/ea was shown as /home/root/ea; the example is the home the user database gives."""
    problem = problem_of(MINIMAL + "state_dir: ~root/ea\n")
    assert problem.startswith(
        "state_dir (c.yaml:3): starts with ~, which is not expanded (found '~root/ea'); "
        f"write the full path, e.g. {Path(pwd.getpwnam('root').pw_dir, 'ea')}"
    ), problem


def test_a_file_url_source_starting_with_a_tilde_is_refused() -> None:
    problem = problem_of(MINIMAL + "camera: {source: 'file:~/clip.mp4'}\n")
    assert problem.startswith(
        "camera.source (c.yaml:3): starts with ~, which is not expanded (found '~/clip.mp4'); "
        "write the full path, e.g. /home/pi/clip.mp4"
    ), problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("outputs.jsonl", "-"),
        ("camera.source", "picamera2"),
        ("camera.source", "/dev/video0"),
        ("camera.source", "rtsp://cam.local/~stream"),
        ("camera.source", "/srv/clips/~tmp.mp4"),
        ("state_dir", "/srv/ea/~old"),
    ],
)
def test_a_tilde_that_is_not_at_the_start_of_a_path_is_accepted(key: str, value: str) -> None:
    cfg: Any = parse_config(MINIMAL + SETTINGS[key].format(f"'{value}'"))
    for part in key.split("."):
        cfg = getattr(cfg, part)
    assert str(cfg) == value


def value_at(cfg: AgentConfig, key: str) -> str:
    found: Any = cfg
    for part in key.split("."):
        found = getattr(found, part)
    return str(found)


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_relative_path_is_read_from_the_config_files_folder(etc: Path, key: str) -> None:
    """state_dir: state was <working folder>/state: /state under systemd, and another folder for
    check-config run by hand, so the two judged different files."""
    path = etc / "agent.yaml"
    path.write_text(MINIMAL + SETTINGS[key].format("sub/x"))
    assert value_at(load_config(path), key) == str(etc / "sub/x")


def test_a_relative_config_path_is_taken_from_the_working_folder_once(etc: Path) -> None:
    """``-c etc/agent.yaml`` is the command line's path: its folder is found from where the
    command runs, and the paths inside from that folder."""
    (etc / "agent.yaml").write_text(MINIMAL + "state_dir: state\noutputs: {jsonl: out.jsonl}\n")
    cfg = load_config(Path("../etc/agent.yaml"))
    assert (cfg.state_dir, cfg.outputs.jsonl) == (etc / "state", str(etc / "out.jsonl"))



def test_a_config_named_through_a_link_and_dotdot_reads_paths_from_the_folder_it_is_in(etc: Path) -> None:
    """``-c ../x/link/../agent.yaml`` with link -> etc/sub: the kernel reads etc/agent.yaml, but
    the folder was taken by cutting ``link/..`` from the text, so keys/device.key and state were
    read in x, a folder holding no config (check-config: device private key not found, exit 2)."""
    generate_keypair(etc / "keys")
    (etc / "sub").mkdir()
    (etc.parent / "x").mkdir()
    (etc.parent / "x" / "link").symlink_to(etc / "sub")
    (etc / "agent.yaml").write_text(
        MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        "mqtt: {enabled: false}\nkeys: {private_key: keys/device.key}\nstate_dir: state\n"
    )
    named = Path("../x/link/../agent.yaml")
    cfg = load_config(named)
    assert (cfg.keys.private_key, cfg.state_dir) == (etc / "keys/device.key", etc / "state")
    checked = run_cli(etc.parent / "elsewhere", "check-config", "-c", str(named))
    assert checked.returncode == 0, checked.stderr


def test_a_bare_key_name_is_read_beside_a_config_named_through_a_link_and_dotdot(etc: Path) -> None:
    """The bare keys.private_key (systemd's credential first) is the file in the same folder
    as the other relative paths: x/link/.. is etc when link -> etc/sub, not x."""
    (etc / "sub").mkdir()
    (etc.parent / "x").mkdir()
    (etc.parent / "x" / "link").symlink_to(etc / "sub")
    assert beside_config(Path("device.key"), Path("../x/link/..")) == etc / "device.key"
    assert beside_config(Path("device.key"), Path("../x/plain/..")) == etc.parent / "x/device.key"


def test_a_relative_file_url_source_is_read_from_the_config_files_folder(etc: Path) -> None:
    (etc / "agent.yaml").write_text(MINIMAL + "camera: {source: 'file:clips/lobby.mp4'}\n")
    assert load_config(etc / "agent.yaml").camera.source == str(etc / "clips/lobby.mp4")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("keys.private_key", "device.key"),  # systemd's credential first (LoadCredential=)
        ("outputs.jsonl", "-"),
        ("camera.source", "picamera2"),
        ("camera.source", "0"),
        ("camera.source", "/dev/video0"),
        ("camera.source", "rtsp://cam.local/stream"),
        ("state_dir", "/srv/ea"),
    ],
)
def test_what_is_not_a_relative_path_is_kept_as_written(etc: Path, key: str, value: str) -> None:
    """A bare key name is looked up in $CREDENTIALS_DIRECTORY before the config's folder
    (``resolve_key_path``), so the load keeps it bare."""
    (etc / "agent.yaml").write_text(MINIMAL + SETTINGS[key].format(f"'{value}'"))
    assert value_at(load_config(etc / "agent.yaml"), key) == value


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False,
        cwd=cwd, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120,
    )


def test_check_config_and_policy_explain_read_the_files_beside_the_config(etc: Path) -> None:
    """Started in another folder (as systemd starts the service in /), check-config found no
    keys/device.key (exit 2), and policy explain named files relative to nowhere in particular."""
    generate_keypair(etc / "keys")
    (etc / "agent.yaml").write_text(
        MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        "mqtt: {enabled: false}\nkeys: {private_key: keys/device.key}\nstate_dir: state\n"
        "outputs: {jsonl: out.jsonl}\npolicy: {privacy_mode: {flag_file: privacy}}\n"
    )
    elsewhere = etc.parent / "elsewhere"
    checked = run_cli(elsewhere, "check-config", "-c", str(etc / "agent.yaml"))
    assert checked.returncode == 0, checked.stderr
    explained = run_cli(elsewhere, "policy", "explain", "-c", str(etc / "agent.yaml"))
    assert explained.returncode == 0, explained.stderr
    flat = " ".join(explained.stdout.split())
    assert f"the file {etc / 'out.jsonl'}" in flat
    assert f"a flag file ({etc / 'privacy'})" in flat
    assert list(elsewhere.iterdir()) == []


def test_the_fleet_config_and_the_site_file_named_through_a_link_and_dotdot_read_their_folder(
    etc: Path,
) -> None:
    """As the agent's config: ``x/link/../FILE`` with link -> etc/sub is etc/FILE to the kernel,
    and its relative paths are read in etc, not in x (the folder was cut from the text)."""
    (etc / "sub").mkdir()
    (etc.parent / "x").mkdir()
    (etc.parent / "x" / "link").symlink_to(etc / "sub")
    (etc / "fleet.yaml").write_text(
        "receiver_id: r1\nprivate_key: keys/r.key\nstate_dir: state\n"
        "source: {kind: nats, servers: ['nats://127.0.0.1:4222']}\n"
    )
    fleet = load_fleet_settings(Path("../x/link/../fleet.yaml"))
    assert (fleet.private_key, fleet.state_dir) == (etc / "keys/r.key", etc / "state")
    (etc / "ca.crt").write_text("not read here\n")
    (etc / "site.yml").write_text(
        "device_name: lobby-1\nbroker: {host: broker.example.internal, ca_cert: ca.crt}\n"
        "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
    )
    site = load_site(Path("../x/link/../site.yml"))
    assert site.broker.ca_cert == etc / "ca.crt"


@pytest.mark.parametrize("value", ["./device.key", "./keys/../device.key"])
def test_a_key_written_with_dot_slash_is_the_file_beside_the_config_not_a_credential(
    etc: Path, value: str
) -> None:
    """pathlib drops a leading ``./``, so ``keys.private_key: ./device.key`` was read as the bare
    name ``device.key``: $CREDENTIALS_DIRECTORY was searched first, and a credential of that name
    was used instead of the file the installer pointed at. Written with ``./`` it is a path."""
    (etc / "agent.yaml").write_text(MINIMAL + SETTINGS["keys.private_key"].format(f"'{value}'"))
    cfg = load_config(etc / "agent.yaml")
    assert cfg.keys.private_key.is_absolute()
    assert cfg.keys.private_key.resolve() == (etc / "device.key").resolve()
