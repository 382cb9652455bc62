"""The receiver's config (``collect -c fleet.yaml``) is read as the agent's: its errors read alike,
``~`` is refused at every path key, and a relative path is read from the config file's folder,
whatever folder ``collect`` was started in (systemd starts it in /)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.crypto import generate_keypair
from agent.errors import ConfigError
from agent.fleet.settings import FleetSettings, load_fleet_settings
from tests.test_config_paths import path_typed_keys

SETTINGS = {
    "state_dir": "receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: /etc/r.key\nstate_dir: {}\n",
    "private_key": "receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: {}\n",
    "registry.keys_dir": "receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: /etc/r.key\n"
    "registry: {{keys_dir: {}}}\n",
    "witness.key": "receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: /etc/r.key\nwitness: {{key: {}}}\n",
    "source.tls.ca": "receiver_id: r1\nprivate_key: /etc/r.key\nsource: {{kind: mqtt, tls: {{ca: {}}}}}\n",
    "source.tls.cert": "receiver_id: r1\nprivate_key: /etc/r.key\n"
    "source: {{kind: mqtt, tls: {{ca: /etc/ca.crt, cert: {}, key: /etc/c.key}}}}\n",
    "source.tls.key": "receiver_id: r1\nprivate_key: /etc/r.key\n"
    "source: {{kind: mqtt, tls: {{ca: /etc/ca.crt, cert: /etc/c.crt, key: {}}}}}\n",
    "source.password_file": "receiver_id: r1\nprivate_key: /etc/r.key\n"
    "source: {{kind: mqtt, username: u, password_file: {}}}\n",
    "database": "receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: /etc/r.key\ndatabase: 'sqlite:///{}'\n",
}
"""A whole fleet config for each key that names a file or folder, set on its last line."""
TEXT_PATHS = {"database"}
"""Keys typed as text that hold a path (a SQLite database's URL): not found by type."""


def value_at(settings: FleetSettings, key: str) -> str:
    """The path the key names (a SQLite URL's: what follows ``sqlite:///``, as ``Store`` reads it)."""
    found: Any = settings
    for part in key.split("."):
        found = getattr(found, part)
    return str(found).removeprefix("sqlite:///") if key == "database" else str(found)


def problems_of(path: Path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_fleet_settings(path)
    return list(info.value.problems)


def test_the_fleet_configs_errors_read_like_the_agents(tmp_path: Path) -> None:
    """They kept pydantic's ``Value error, `` prefix, showed the value twice, named a NATS key
    ``source.nats.stream`` (the union's tag) at the line of ``source``, and gave no line file or
    help; each now reads as the agent's: key (file:line): what is wrong. Title: description."""
    path = tmp_path / "fleet.yaml"
    problems = problems_of(
        path,
        "receiver_id: R1\n"
        "source:\n  kind: nats\n  stream: bad stream\n"
        "http: {port: 99999, colour: blue}\n",
    )
    assert problems == [
        f"receiver_id ({path}:1): 'R1': lower-case letters, digits and dashes, at most 63. "
        "Receiver id: Unique per replica; used in topics.",
        f"source.stream ({path}:4): String should match pattern '^[A-Za-z0-9_-]{{1,32}}$' "
        "(found 'bad stream'). Stream: JetStream stream that holds the device subjects (made if missing).",
        f"private_key ({path}:1): required key is missing. Receiver key: Ed25519 PEM that signs rollups. "
        "A bare file name is looked up in $CREDENTIALS_DIRECTORY first (systemd), then in the config "
        "file's folder.",
        f"http.port ({path}:5): Input should be less than or equal to 65535 (found 99999). "
        "Port: /metrics, /healthz and the page; 0: off.",
        f"http.colour ({path}:5): unknown key (found 'blue'); remove it or check its spelling; the keys here "
        "are host, port",
    ]


@pytest.mark.parametrize(("server", "problem"), [
    ("nats://n1:99999", "'nats://n1:99999': its port is not a number from 1 to 65535 (or an IPv6 "
     "bracket is unclosed)"),
    ("http://n1:4222", "'http://n1:4222': scheme 'http' is not one of nats://, tls://, ws://, wss://"),
    ("nats://n1:0", "'nats://n1:0': port 0 is no server's; the default is 4222"),
    ("nats://rx:secret@:4222", "'nats://***@:4222': names no host"),
    ("nats://rx:se/cret@n1:4222", "'nats://***@n1:4222': its host or port cannot be read: a user name or "
     "password in a NATS URL cannot hold '/', '?', '#', '[' or ']'"),
    ("nats://rx:secret@n1:99999", "'nats://***@n1:99999': its port is not a number from 1 to 65535"),
    ("NATS://rx:secret@n1:4222", "'NATS://***@n1:4222': scheme 'NATS' is not one of nats://, tls://, "
     "ws://, wss:// (in lower case, as nats-py reads them)"),
    ("None", "'None': host 'none' is refused by nats-py (a YAML None?)"),
    ("nats://n1..example:4222",
     "'nats://n1..example:4222': host has an empty label (a leading or double dot)"),
])
def test_a_nats_server_url_nats_py_cannot_use_is_refused_at_its_key(
    tmp_path: Path, server: str, problem: str
) -> None:
    """nats-py raised on such a URL only when connecting, which the receiver took for a server
    away: it retried for ever instead of exiting 2 (found by review). The password is not shown."""
    path = tmp_path / "fleet.yaml"
    servers = f"[nats://n0:4222, '{server}']"
    (found,) = problems_of(
        path, f"receiver_id: r1\nprivate_key: /etc/r.key\nsource: {{kind: nats, servers: {servers}}}\n"
    )
    assert found.startswith(f"source.servers ({path}:3): server 2, {problem}")
    assert "cret" not in found


def test_nats_servers_of_both_transports_are_refused_and_nats_py_defaults_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    (found,) = problems_of(
        path, "receiver_id: r1\nprivate_key: /etc/r.key\nsource: {kind: nats, servers: [nats://n1, ws://n2]}\n"
    )
    assert "mixes ws:// or wss:// servers with nats:// or tls:// ones; nats-py takes one kind" in found
    path.write_text("receiver_id: r1\nprivate_key: /etc/r.key\n"
                    "source: {kind: nats, servers: [n1, '127.0.0.1:4223', 'tls://[::1]:4222']}\n")
    assert load_fleet_settings(path).source.servers == ["n1", "127.0.0.1:4223", "tls://[::1]:4222"]
    path.write_text("receiver_id: r1\nprivate_key: /etc/r.key\n"
                    "source: {kind: nats, servers: ['nats://rx:p@ss@n1', 'wss://n2/p@th']}\n")
    with pytest.raises(ConfigError, match="mixes ws://"):  # each URL alone is taken, as by nats-py
        load_fleet_settings(path)


def test_a_value_of_the_wrong_type_is_refused_as_in_the_agents_config(tmp_path: Path) -> None:
    """The fleet loader validated the YAML's data laxly: port: "8883" was 8883, enabled: "yes"
    true and port: 9108.0 9108, where the agent's config (``parse_config``, strict) refuses each
    at its key; now the fleet config does too, with the same message."""
    path = tmp_path / "fleet.yaml"
    problems = problems_of(
        path,
        'receiver_id: r1\nsource: {kind: mqtt, port: "8883"}\nprivate_key: /etc/r.key\n'
        'witness: {enabled: "yes"}\nhttp: {port: 9108.0}\n',
    )
    assert problems == [
        f"source.port ({path}:2): Input should be a valid integer (found '8883'). "
        "Broker port: 8883 with TLS, 1883 without.",
        f"witness.enabled ({path}:4): Input should be a valid boolean (found 'yes'). "
        "Witness checkpoints: Cosign consistent checkpoints.",
        f"http.port ({path}:5): Input should be a valid integer (found 9108.0). "
        "Port: /metrics, /healthz and the page; 0: off.",
    ]


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    """docs/fleet.md's fleet.yaml, read as strictly as the agent's config (paths as text)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "fleet.md").read_text()
    example = doc.split("```yaml\nreceiver_id:", 1)[1].split("```", 1)[0]
    path = tmp_path / "fleet.yaml"
    path.write_text("receiver_id:" + example)
    settings = load_fleet_settings(path)
    assert settings.source.port == 8883
    assert settings.private_key == Path("/etc/emotion-agent-fleet/receiver.key")
    assert settings.rollup.sites == {"hall-a": ["cam-1", "cam-2"]}


def test_every_path_key_of_the_fleet_config_is_covered_here() -> None:
    """A new path key joins SETTINGS, so every check below is made of it too."""
    assert path_typed_keys(FleetSettings) | TEXT_PATHS == set(SETTINGS)


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_path_starting_with_a_tilde_is_refused_at_its_key(tmp_path: Path, key: str) -> None:
    path = tmp_path / "fleet.yaml"
    text = SETTINGS[key].format("~/fleet/x")
    (problem,) = problems_of(path, text)
    assert problem.startswith(
        f"{key} ({path}:{text.count(chr(10))}): starts with ~, which is not expanded "
        "(found '~/fleet/x'); write the full path, e.g. /home/pi/fleet/x"
    ), problem


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_relative_path_is_read_from_the_config_files_folder(etc: Path, key: str) -> None:
    """state_dir: state was <working folder>/state: /state under systemd, and another folder
    when collect was started by hand."""
    path = etc / "fleet.yaml"
    path.write_text(SETTINGS[key].format("sub/x"))
    assert value_at(load_fleet_settings(path), key) == str(etc / "sub/x")


@pytest.mark.parametrize("key", ["private_key", "witness.key"])
def test_a_key_given_by_a_bare_name_stays_bare(etc: Path, key: str) -> None:
    """As the agent's device key: systemd's credential ($CREDENTIALS_DIRECTORY) first, then the
    file beside the config (``resolve_key_path``, given the folder by ``collect``)."""
    path = etc / "fleet.yaml"
    path.write_text(SETTINGS[key].format("receiver.key"))
    assert value_at(load_fleet_settings(path), key) == "receiver.key"


def test_collect_started_in_another_folder_reads_and_writes_beside_its_config(etc: Path) -> None:
    """Started elsewhere (systemd starts it in /), collect read the key ``receiver.key`` from
    the working folder (exit 2) and would have put state/ there."""
    key = generate_keypair(etc)
    (etc / "devices").mkdir()
    (etc / "fleet.yaml").write_text(
        f"receiver_id: rx-1\nsource: {{kind: mqtt, host: 127.0.0.1, port: 1}}\n"
        f"private_key: {key.private_path.name}\nwitness: {{key: {key.private_path.name}}}\n"
        f"state_dir: state\nregistry: {{keys_dir: devices}}\nhttp: {{port: 0}}\n"
        f"database: sqlite:///fleet.db\n"
    )
    elsewhere = etc.parent / "elsewhere"
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-m", "agent", "collect", "-c", str(etc / "fleet.yaml")],
        cwd=elsewhere, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE, text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)  # never starts: the test fails, not hangs
        watchdog.start()
        try:
            assert proc.stderr is not None
            log = []
            for line in proc.stderr:
                log.append(line)
                if "receiver running" in line:
                    proc.send_signal(signal.SIGTERM)
            assert proc.wait() == 0, "".join(log)
        finally:
            watchdog.cancel()
    assert (etc / "state").is_dir()
    assert (etc / "fleet.db").is_file()
    assert list(elsewhere.iterdir()) == []


def test_the_default_database_is_the_file_under_var_lib(etc: Path) -> None:
    """The default sqlite:///var/lib/emotion-agent-fleet/fleet.db is, as the store reads a SQLite
    URL (SQLAlchemy's form), the relative path var/lib/...: /var/lib/... only under systemd
    (started in /), and collect started by hand made var/lib/... in the working folder."""
    (etc / "fleet.yaml").write_text(SETTINGS["state_dir"].format("/var/lib/emotion-agent-fleet"))
    url = load_fleet_settings(etc / "fleet.yaml").database
    assert url == FleetSettings.model_fields["database"].default
    assert url == "sqlite:////var/lib/emotion-agent-fleet/fleet.db"


@pytest.mark.parametrize(
    ("value", "full"),
    [("fleet.db", "fleet.db"), ("db/fleet.db", "db/fleet.db"), ("./var/fleet.db", "var/fleet.db")],
)
def test_a_relative_sqlite_database_is_read_from_the_config_files_folder(
    etc: Path, value: str, full: str
) -> None:
    (etc / "fleet.yaml").write_text(SETTINGS["database"].format(value))
    assert load_fleet_settings(etc / "fleet.yaml").database == f"sqlite:///{etc / full}"


def test_a_full_sqlite_path_is_kept_as_written(etc: Path) -> None:
    (etc / "fleet.yaml").write_text(SETTINGS["database"].format("/srv/fleet/fleet.db"))
    assert load_fleet_settings(etc / "fleet.yaml").database == "sqlite:////srv/fleet/fleet.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sqlite:///var/lib/emotion-agent-fleet/fleet.db",
            "'sqlite:///var/lib/emotion-agent-fleet/fleet.db' names the relative path "
            "var/lib/emotion-agent-fleet/fleet.db, read from the config file's folder; for "
            "/var/lib/emotion-agent-fleet/fleet.db write four slashes "
            "(sqlite:////var/lib/emotion-agent-fleet/fleet.db), for a folder var beside this file "
            "write sqlite:///./var/lib/emotion-agent-fleet/fleet.db",
        ),
        ("sqlite:///srv/fleet.db", "'sqlite:///srv/fleet.db' names the relative path srv/fleet.db"),
        ("sqlite:///", "'sqlite:///' names no file; e.g. sqlite:////var/lib/emotion-agent-fleet/fleet.db"),
    ],
)
def test_a_sqlite_url_that_cannot_mean_what_it_says_is_refused(
    etc: Path, url: str, expected: str
) -> None:
    """The docs' example was sqlite:///var/lib/...: read beside the config it would silently be a
    new, empty database (every device key learnt and every stored sequence number gone), so a
    relative path under a system folder's name is refused with the two ways to write it."""
    path = etc / "fleet.yaml"
    text = f"receiver_id: r1\nsource: {{kind: mqtt}}\nprivate_key: /etc/r.key\ndatabase: '{url}'\n"
    (problem,) = problems_of(path, text)
    assert problem.startswith(f"database ({path}:4): {expected}"), problem


def test_a_postgresql_urls_relative_certificate_files_are_read_beside_the_config(etc: Path) -> None:
    """libpq reads ``sslrootcert=ca.crt`` from the working folder: / under systemd, so a receiver
    that passed ``check`` by hand in /etc/emotion-agent-fleet could not connect as a service.
    The file options are now read beside the config as every other path; the rest of the URL
    (credentials, host, other options, their percent-encoding) is kept as written."""
    url = ("postgresql://fleet:p%40ss@db.example:5432/fleet?sslmode=verify-full&sslrootcert=certs/root ca.crt"
           "&sslcert=/etc/ssl/fleet.crt&sslkey=certs/fleet.key&application_name=a%26b&sslcrl=crl.pem")
    (etc / "fleet.yaml").write_text(SETTINGS["database"].replace("sqlite:///{}", "{}").format(url))
    database = load_fleet_settings(etc / "fleet.yaml").database
    assert database == (
        f"postgresql://fleet:p%40ss@db.example:5432/fleet?sslmode=verify-full&sslrootcert={etc}/certs/root%20ca.crt"
        f"&sslcert=/etc/ssl/fleet.crt&sslkey={etc}/certs/fleet.key&application_name=a%26b&sslcrl={etc}/crl.pem"
    )


def test_a_postgresql_certificate_file_starting_with_a_tilde_is_refused(etc: Path) -> None:
    path = etc / "fleet.yaml"
    text = SETTINGS["database"].replace("sqlite:///{}", "{}").format("postgresql://db/fleet?sslrootcert=~/ca.crt")
    (problem,) = problems_of(path, text)
    assert problem.startswith(f"database ({path}:4): sslrootcert starts with ~"), problem


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('receiver_id: r1\nsource: {kind: mqtt, share_group: "grp\\n"}\nprivate_key: /etc/r.key\n',
         "share_group"),
        ('receiver_id: "rx-1\\n"\nsource: {kind: mqtt}\nprivate_key: /etc/r.key\n', "receiver_id"),
    ],
)
def test_a_name_ending_in_a_newline_is_refused_at_its_key(tmp_path: Path, text: str, key: str) -> None:
    """Python's ``$`` matches before a final newline too: both loaded, and `collect` then ran
    receiving nothing (the broker dropped the subscription, or refused the client id), exit 0,
    every message published meanwhile lost (found by a hostile-input probe)."""
    problems = problems_of(tmp_path / "fleet.yaml", text)
    assert len(problems) == 1, problems
    assert key in problems[0]
    assert "\\n" in problems[0]
