"""Hostile and unlucky input (issue 18): each case the attack session measured, through the CLI.

Every case ends with exit 2, an error naming the key or file, no traceback, and in bounded time
(the subprocess timeout; before, these hung, took 10-40 s, or ran out of memory).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.config import parse_config
from agent.crypto import generate_keypair
from agent.errors import MAX_LISTED, ConfigError
from agent.fleet.settings import load_fleet_settings
from agent.provision.bundle import render_config
from agent.provision.site import load_site
from agent.user_files import read_user_bytes

BOUND_S = 30
"""Generous: each case takes about a second; it guards against the old hangs, not speed."""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=BOUND_S, check=False
    )


def config(tmp: Path, extra: str = "", *, mqtt: str = "mqtt: {enabled: false}") -> Path:
    """A valid config (real key, own state folder) plus ``extra`` top-level lines."""
    if not (tmp / "keys" / "device.key").exists():
        generate_keypair(tmp / "keys")
    path = tmp / "agent.yaml"
    path.write_text(
        "schema_version: 1\n"
        "device_id: lobby-1\n"
        "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"{mqtt}\n"
        + ("" if "keys:" in extra else f"keys: {{private_key: {tmp / 'keys' / 'device.key'}}}\n")
        + ("" if "state_dir:" in extra else f"state_dir: {tmp / 'state'}\n")
        + extra
    )
    return path


def refused(proc: subprocess.CompletedProcess[str], *named: str) -> str:
    """Exit 2, no traceback, the error line names every string in ``named``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emotion-agent: error:")]
    assert len(errors) == 1, proc.stderr
    for name in named:
        assert name in proc.stderr, (name, proc.stderr)
    return proc.stderr


def test_a_valid_config_with_its_files_passes_check_config(tmp_path: Path) -> None:
    proc = cli("check-config", "-c", str(config(tmp_path)))
    assert proc.returncode == 0, proc.stderr


# --- YAML -----------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


def test_an_alias_bomb_is_refused_at_its_first_anchor(tmp_path: Path) -> None:
    path = config(tmp_path, BILLION_LAUGHS)
    err = refused(cli("check-config", "-c", str(path)), f"{path}:7", "anchors (&a) are not allowed")
    assert "MemoryError" not in err


def test_a_5000_deep_list_is_refused_without_a_recursion_error(tmp_path: Path) -> None:
    path = config(tmp_path, "camera: {source: " + "[" * 5000 + "]" * 5000 + "}\n")
    err = refused(cli("check-config", "-c", str(path)), str(path))
    assert "RecursionError" not in err


def test_a_5000_deep_block_list_is_refused_at_the_depth_limit(tmp_path: Path) -> None:
    path = config(tmp_path, "camera:\n  source:\n" + "".join("  " * (i + 2) + "-\n" for i in range(5000)))
    refused(cli("check-config", "-c", str(path)), str(path))


def test_a_duplicate_key_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = config(tmp_path, "device_id: lobby-2\n")
    refused(cli("check-config", "-c", str(path)), f"{path}:", "duplicate key 'device_id' (first on line 2)")


def test_threads_true_is_not_read_as_one(tmp_path: Path) -> None:
    path = config(tmp_path, "vision: {threads: true}\n")
    refused(cli("check-config", "-c", str(path)), "vision.threads", "True")


def test_a_200k_point_zone_is_refused_by_the_size_limit(tmp_path: Path) -> None:
    points = ", ".join("[0.5, 0.5]" for _ in range(200_000))
    path = config(tmp_path, f"policy: {{zones: [{{name: door, polygon: [{points}]}}]}}\n")
    refused(cli("check-config", "-c", str(path)), str(path), "too large for a config")


# --- files named by the config --------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path, 0o600)
    return path


def test_a_nul_byte_in_a_config_path_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = config(tmp_path, 'keys: {private_key: "/tmp/dev\\0ice.key"}\n')
    refused(cli("check-config", "-c", str(path)), "keys.private_key", "NUL byte")


def test_read_user_bytes_refuses_a_nul_byte_in_the_name() -> None:
    with pytest.raises(ConfigError, match=r"'/etc/a\\x00b': the password file's name contains a NUL byte"):
        read_user_bytes(Path("/etc/a\0b"), "password file", ConfigError)


def test_a_fifo_as_the_device_key_is_refused_not_waited_on(tmp_path: Path, fifo: Path) -> None:
    path = config(tmp_path, f"keys: {{private_key: {fifo}}}\n")
    refused(cli("check-config", "-c", str(path)), str(fifo), "must be a regular file, not a FIFO")
    refused(cli("run", "-c", str(path)), str(fifo), "must be a regular file, not a FIFO")


MQTT_PW = "mqtt: {{host: 127.0.0.1, port: 1883, username: lobby-1, password_file: {pw}}}"


def test_a_fifo_as_the_password_file_is_refused_not_waited_on(tmp_path: Path, fifo: Path) -> None:
    path = config(tmp_path, mqtt=MQTT_PW.format(pw=fifo))
    refused(cli("check-config", "-c", str(path)), "mqtt.password_file", str(fifo), "not a FIFO")


def test_dev_zero_as_the_password_file_is_refused_not_read(tmp_path: Path) -> None:
    path = config(tmp_path, mqtt=MQTT_PW.format(pw="/dev/zero"))
    err = refused(cli("check-config", "-c", str(path)), "mqtt.password_file /dev/zero", "character device")
    assert "MemoryError" not in err


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o644)
    path = config(tmp_path, mqtt=MQTT_PW.format(pw=pw))
    refused(cli("check-config", "-c", str(path)), "mqtt.password_file", "mode 0644", "chmod o-rwx")
    pw.chmod(0o640)  # root:emotion-agent 0640 is how provisioning shares secrets with the service
    assert cli("check-config", "-c", str(path)).returncode == 0


def test_a_clear_text_password_to_a_remote_broker_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    remote = MQTT_PW.format(pw=pw).replace("127.0.0.1", "broker.example.net")
    path = config(tmp_path, mqtt=remote)
    refused(cli("check-config", "-c", str(path)), "mqtt.password_file", "clear text", "broker.example.net")


@pytest.mark.parametrize(
    ("content", "mode", "said"),
    [
        (b"not a key\n", 0o600, "not a PEM private key"),
        (b"", 0o600, "not a PEM private key"),
        (None, 0o600, "is an RSA key"),
        (b"-----BEGIN PRIVATE KEY-----\n", 0o644, "mode 0644"),
    ],
)
def test_check_config_loads_the_device_key_as_run_does(
    tmp_path: Path, content: bytes | None, mode: int, said: str
) -> None:
    key = tmp_path / "bad.key"
    if content is None:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        content = rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    key.write_bytes(content)
    key.chmod(mode)
    path = config(tmp_path, f"keys: {{private_key: {key}}}\n")
    refused(cli("check-config", "-c", str(path)), str(key), said)


def test_check_config_loads_the_tls_files_as_run_does(tmp_path: Path, fifo: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate\n")
    tls = f"mqtt: {{host: 127.0.0.1, tls: {{ca: {ca}}}}}"
    refused(cli("check-config", "-c", str(config(tmp_path, mqtt=tls))), "mqtt.tls.ca", str(ca))
    tls = f"mqtt: {{host: 127.0.0.1, tls: {{ca: {fifo}}}}}"
    refused(cli("check-config", "-c", str(config(tmp_path, mqtt=tls))), "mqtt.tls.ca", "not a FIFO")


# --- topics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("base_topic", "emotion-agent/#"), ("discovery_prefix", "home/+/x"), ("base_topic", "$SYS/x")],
)
def test_topic_fields_refuse_wildcards(tmp_path: Path, key: str, value: str) -> None:
    path = config(tmp_path, mqtt=f"mqtt: {{enabled: true, {key}: '{value}'}}")
    refused(cli("check-config", "-c", str(path)), f"mqtt.{key}", value)


# --- state_dir ------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["/", "/etc", "/var/lib/..", "/proc/self"])
def test_state_dir_refuses_the_root_and_system_folders(tmp_path: Path, folder: str) -> None:
    path = config(tmp_path, f"state_dir: {folder}\n")
    refused(cli("check-config", "-c", str(path)), "state_dir")


def test_a_state_dir_that_is_a_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    path = config(tmp_path)
    refused(cli("check-config", "-c", str(path)), f"state_dir {tmp_path / 'state'}: is a file")
    err = refused(cli("run", "-c", str(path)), f"state_dir {tmp_path / 'state'}: is a file")
    assert "FileExistsError" not in err


# --- values quoted in errors ----------------------------------------------------------------------

BIG = "x" * 100_000
ITEMS = "[" + ", ".join(["1"] * 15_000) + "]"
AGENT = "schema_version: 1\ndevice_id: lobby-1\n"
FLEET = "receiver_id: r1\nprivate_key: /etc/r.key\n"
SITE = (
    "device_name: lobby-1\nbroker: {host: broker.example.internal, ca_cert: ca.crt}\n"
    "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
)
LINE_BOUND = 1_000
"""A problem line: at most a few hundred characters of each value it quotes, the key and its help."""


def problems_of(kind: str, text: str, tmp: Path) -> str:
    """The ConfigError that ``text`` gives as the agent, the receiver or provisioning reads it,
    its file named by its name alone."""
    path = tmp / ("fleet.yml" if kind == "fleet" else "site.yml")
    path.write_text(text)
    read = {
        "agent": lambda: parse_config(text, "agent.yaml"),
        "fleet": lambda: load_fleet_settings(path),
        "site": lambda: load_site(path),
        "provision": lambda: render_config(load_site(path), "lobby-1", has_cert=True),
    }[kind]
    with pytest.raises(ConfigError) as info:
        read()
    return str(info.value).replace(str(path), path.name)


@pytest.mark.parametrize(
    ("kind", "text", "said"),
    [
        ("agent", AGENT + f"bogus: {ITEMS}\n", "bogus (agent.yaml:3): unknown key (found [1, 1,"),
        ("agent", AGENT + f"camera: {{fps: {BIG}}}\n", "camera.fps (agent.yaml:3): Input should be"),
        ("agent", AGENT + f"mqtt: {{host: {BIG}}}\n", "mqtt.host (agent.yaml:3): mqtt.host 'xxx"),
        ("agent", f"schema_version: 1\ndevice_id: {BIG}\n", "device_id (agent.yaml:2): String should"),
        ("agent", AGENT + f"state_dir: '~{BIG}'\n", "state_dir (agent.yaml:3): starts with ~"),
        ("agent", AGENT + "policy: {schedule: {timezone: UTC, hours: {mon: ["
         + ", ".join(["'08:00-09:00'"] * 15_000) + "]}}}\n", "mon: time ranges overlap (['08:00-09:00',"),
        ("agent", AGENT + f"policy: {{schedule: {{timezone: UTC, hours: {{mon: ['{BIG}']}}}}}}\n",
         "mon: 'xxx"),
        ("agent", f"schema_version: {BIG}\n", "schema_version must be an integer (found 'xxx"),
        ("agent", AGENT + f"? {BIG}\n: 1\n", "unknown key (found 1)"),
        ("agent", AGENT + f"a: &{BIG} 1\n", "agent.yaml:3: YAML anchors (&xxx"),
        ("agent", AGENT + f"a: !{BIG} 1\n", "agent.yaml:3: YAML tags (!xxx"),
        ("agent", AGENT + f"? {BIG}\n: 1\n? {BIG}\n: 2\n", "agent.yaml:5: duplicate key 'xxx"),
        ("fleet", FLEET + f"source: {{kind: mqtt}}\nbogus: {ITEMS}\n", "bogus (fleet.yml:4): unknown key"),
        ("fleet", FLEET + f"source: {{kind: mqtt, host: {BIG}}}\n", "source.host (fleet.yml:3): 'xxx"),
        ("fleet", FLEET + f"source: {{kind: {BIG}}}\n", "source (fleet.yml:3): Input tag 'xxx"),
        ("fleet", f"receiver_id: {BIG}\nprivate_key: /etc/r.key\nsource: {{kind: mqtt}}\n", "receiver_id"),
        ("fleet", FLEET + f"source: {{kind: mqtt}}\ndatabase: 'sqlite:///etc/{BIG}'\n",
         "database (fleet.yml:4): 'sqlite:///etc/xxx"),
        ("site", SITE + f"bogus: {ITEMS}\n", "bogus (site.yml:4): unknown key (found [1, 1,"),
        ("site", f"device_name: {BIG}\nbroker: {{host: b, ca_cert: ca.crt}}\n", "device_name 'xxx"),
        ("site", SITE + f"username: {ITEMS}\n", "username (site.yml:4): Input should be a valid string"),
        ("provision", SITE + f"agent: {{mqtt: {{host: {BIG}}}}}\n", "agent.mqtt.host (site.yml:4): set by"),
        ("provision", SITE + f"agent: {{mqtt: {ITEMS}}}\n", "agent.mqtt (site.yml:4): set by provisioning"),
        ("provision", SITE + f"agent: {{state_dir: {BIG}}}\n", "agent.state_dir (site.yml:4): 'xxx"),
        ("provision", SITE + f"agent: {{camera: {{fps: {ITEMS}}}}}\n", "agent.camera.fps (site.yml:4)"),
    ],
)
def test_an_error_quotes_a_few_hundred_characters_of_a_value_and_its_size(
    kind: str, text: str, said: str, tmp_path: Path
) -> None:
    """Each printed the whole value it found (a key's name, an anchor's, a value a validator
    quoted): a 15,000-item list or a 100,000-character string made a line that long."""
    err = problems_of(kind, text, tmp_path)
    assert said in err, err[:2_000]
    assert max(len(line) for line in err.splitlines()) <= LINE_BOUND, err[:2_000]
    assert re.search(r"… \((100,0\d\d characters|a list of 15,000 items)\)", err), err[:2_000]


def test_a_long_value_is_cut_after_320_characters_with_an_ellipsis_and_its_size() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(AGENT + f"bogus: {ITEMS}\n", "agent.yaml")
    assert info.value.problems == [
        "bogus (agent.yaml:3): unknown key (found " + "[" + "1, " * 106 + "1… (a list of 15,000 items)); "
        "remove it or check its spelling"
    ]


def test_check_config_prints_a_bounded_line_for_a_huge_value(tmp_path: Path) -> None:
    path = config(tmp_path, f"camera: {{fps: {ITEMS}}}\n")
    err = refused(cli("check-config", "-c", str(path)), "camera.fps", "(a list of 15,000 items)")
    assert len(err) < 2 * LINE_BOUND, err[:2_000]


def test_check_config_lists_the_first_problems_and_counts_the_rest(tmp_path: Path) -> None:
    """15,000 wrong hours made 15,001 problem lines, 1.35 MB on the terminal (found by review):
    the first ones are listed, the rest counted."""
    path = config(tmp_path, f"policy: {{schedule: {{hours: {{mon: {ITEMS}}}}}}}\n")
    proc = cli("check-config", "-c", str(path))
    assert proc.returncode == 2, proc.stderr[-2_000:]
    assert "Traceback" not in proc.stderr
    listed = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert len(listed) == MAX_LISTED, len(listed)
    assert f"and {15_001 - MAX_LISTED:,} more problems" in proc.stderr, proc.stderr[-2_000:]
    assert len(proc.stderr) < MAX_LISTED * LINE_BOUND, len(proc.stderr)
