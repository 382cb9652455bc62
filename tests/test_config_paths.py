"""Every path the config names is read the same way: ``~`` is refused at its key when the file
loads (nothing expands it), whether the key is typed as a path or as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig, parse_config
from agent.errors import ConfigError
from agent.fleet.settings import load_fleet_settings

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


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        ("database: 'sqlite:///~/fleet.db'\n", "database"),
        ("state_dir: ~/fleet\n", "state_dir"),
        ("registry: {keys_dir: ~/keys}\n", "registry.keys_dir"),
    ],
)
def test_the_receivers_config_refuses_a_tilde_as_the_agents_does(
    tmp_path: Path, lines: str, key: str
) -> None:
    """The receiver's database path is text inside a URL: sqlite:///~/fleet.db was a folder named ~."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "receiver_id: r1\nsource: {kind: mqtt, host: 127.0.0.1}\nprivate_key: /etc/r.key\n" + lines
    )
    with pytest.raises(ConfigError) as info:
        load_fleet_settings(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{key} (line 4): Value error, starts with ~, which is not expanded"), problem
