"""docs/installing.md's troubleshooting table: each row's message is what its failure really prints.

Every row of the table names a message (the part in backticks in its second column); PRODUCERS
below causes that row's failure through the same code an installer runs (the CLI, the first-boot
importer, Debian's mosquitto, the agent's camera and broker-link code) and returns what it
printed. A row without a producer, or a producer whose output lacks the row's text, fails.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.camera.picam import import_picamera2, numpy_abi_mismatch
from agent.clock import FakeClock
from agent.config import parse_config
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key
from agent.errors import BackendUnavailable
from agent.policy_clock import date_for_policy
from agent.transport.link import explain

PROJECT = Path(__file__).resolve().parents[2]
DOC = PROJECT / "docs" / "installing.md"
SITE = "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
CHECKOUT = {**os.environ, "PYTHONPATH": str(PROJECT)}  # this checkout's agent, not the one a venv installed


def cli(*args: str, cwd: Path) -> str:
    """`emotion-agent ARGS` as the installer runs it: what it printed, both streams."""
    done = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=60, env=CHECKOUT)
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def keys(tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "agent", "keygen", "--out", str(tmp / "k")],
                   check=True, capture_output=True, env=CHECKOUT)
    return tmp / "k"


def config(tmp: Path, extra: str) -> Path:
    keys(tmp)
    path = tmp / "agent.yaml"
    head = f"schema_version: 1\ndevice_id: lobby-1\n{SITE}"
    path.write_text(f"{head}keys: {{private_key: k/device.key}}\n{extra}")
    return path


def duplicate_persistence(tmp: Path) -> str:
    """A conf.d snippet repeating what Debian's mosquitto.conf sets: mosquitto's own refusal."""
    (tmp / "conf.d").mkdir()
    main = Path("/etc/mosquitto/mosquitto.conf").read_text()
    main = main.replace("/etc/mosquitto/conf.d", str(tmp / "conf.d"))
    (tmp / "mosquitto.conf").write_text(main)
    (tmp / "conf.d" / "site.conf").write_text("persistence_location /var/lib/mosquitto/\n")
    done = subprocess.run(["mosquitto", "-c", str(tmp / "mosquitto.conf")], capture_output=True, text=True,
                          check=False, timeout=30)
    assert done.returncode != 0
    return done.stdout + done.stderr


def not_a_boot_partition(tmp: Path) -> str:
    site = tmp / "site.yml"
    site.write_text(f"device_name: lobby-1\nbroker: {{host: b, ca_cert: ca.crt}}\n{SITE}")
    (tmp / "laptop-disk").mkdir()
    return cli("provision", "--site", str(site), "--boot", str(tmp / "laptop-disk"), cwd=tmp)


def provisioned_bootfs(tmp: Path) -> Path:
    """A bootfs folder `emotion-agent provision` has written lobby-1's bundle into."""
    boot = tmp / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp / "ca.key"), "-subj", "/CN=ca", "-out", str(tmp / "ca.crt")],
                   check=True, capture_output=True)
    site = tmp / "site.yml"
    site.write_text(f"device_name: lobby-1\nbroker: {{host: b, ca_cert: ca.crt}}\n{SITE}")
    subprocess.run([sys.executable, "-m", "agent", "provision", "--site", str(site), "--boot", str(boot)],
                   check=True, capture_output=True, env=CHECKOUT)
    return boot


def first_boot_import(tmp: Path, boot: Path, env: dict[str, str] | None = None) -> str:
    """systemd/emotion-agent-import as the first-boot unit runs it; it must fail."""
    done = subprocess.run(["sh", str(PROJECT / "systemd/emotion-agent-import"), "--boot", str(boot),
                           "--etc", str(tmp / "etc"), "--chown-as", f"{os.getuid()}:{os.getgid()}"],
                          capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 1
    return done.stdout + done.stderr


def tampered_bundle(tmp: Path) -> str:
    boot = provisioned_bootfs(tmp)
    with (boot / "emotion-agent" / "agent.yaml").open("a") as f:
        f.write("# edited on the card\n")
    return first_boot_import(tmp, boot)


def cut_checksums(tmp: Path) -> str:
    """A SHA256SUMS cut short (a partial copy): the files it no longer names are not installed."""
    boot = provisioned_bootfs(tmp)
    sums = boot / "emotion-agent" / "SHA256SUMS"
    sums.write_text("".join(sums.read_text().splitlines(keepends=True)[:3]))
    return first_boot_import(tmp, boot)


def full_root_partition(tmp: Path) -> str:
    """`install` runs out of space staging a file, as on a full root partition."""
    boot = provisioned_bootfs(tmp)
    fake = tmp / "bin"
    fake.mkdir()
    (fake / "install").write_text('#!/bin/sh\necho "install: No space left on device" >&2\nexit 1\n')
    (fake / "install").chmod(0o755)
    return first_boot_import(tmp, boot, {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})


def second_card_with_one_id(tmp: Path) -> str:
    """site.yml not edited between two cards: the second is refused (they would share one identity)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp / "ca.key"), "-subj", "/CN=ca", "-out", str(tmp / "ca.crt")],
                   check=True, capture_output=True)
    site = tmp / "site.yml"
    site.write_text(f"device_name: lobby-1\nbroker: {{host: b, ca_cert: ca.crt}}\n{SITE}")
    for card in ("card-1", "card-2"):
        (tmp / card).mkdir()
        (tmp / card / "config.txt").write_text("arm_64bit=1\n")
    argv = ["provision", "--site", str(site), "--out", "keys", "--verifier-list", "verifiers.jsonl"]
    subprocess.run([sys.executable, "-m", "agent", *argv, "--boot", "card-1"],
                   check=True, capture_output=True, cwd=tmp, env=CHECKOUT)
    return cli(*argv, "--boot", "card-2", cwd=tmp)


def unknown_key_field(tmp: Path) -> str:
    return cli("check-config", "-c", str(config(tmp, "camera: {source: picamera2, fsp: 5}\n")), cwd=tmp)


def password_written_in_the_config(tmp: Path) -> str:
    return cli("check-config", "-c", str(config(tmp, "mqtt: {host: b, password: hunter2}\n")), cwd=tmp)


def key_readable_by_others(tmp: Path) -> str:
    path = config(tmp, "")
    (tmp / "k" / "device.key").chmod(0o644)
    return cli("check-config", "-c", str(path), cwd=tmp)


def no_client_certificate(tmp: Path) -> str:
    tls = "{ca: /etc/ssl/certs/ca-certificates.crt, cert: client.crt, key: client.key}"
    path = config(tmp, f"mqtt: {{host: b, username: lobby-1, tls: {tls}}}\n")
    return cli("check-config", "-c", str(path), cwd=tmp)


def wrong_public_key(tmp: Path) -> str:
    """A message signed by one key, checked against another device's public key."""
    key = load_private_key(keys(tmp / "a") / "device.key")
    signed = Signer("lobby-1", key, store=MemorySequenceStore()).sign("key", "emotion-agent/lobby-1/key", {})
    (tmp / "first.jsonl").write_text(encode(signed).decode() + "\n")
    other = keys(tmp / "b") / "device.pub.jwk"
    return cli("verify", "--pubkey", str(other), "--device", "lobby-1", str(tmp / "first.jsonl"), cwd=tmp)


def picamera2_missing(_tmp: Path) -> str:
    with pytest.raises(BackendUnavailable) as caught:
        import_picamera2()  # this machine has no python3-picamera2, as a venv without system packages
    return str(caught.value)


def numpy_2_in_the_venv(_tmp: Path) -> str:
    """numpy 2's own exception text when an extension built for numpy 1.x loads (picamera2 #1088)."""
    fix = numpy_abi_mismatch(AttributeError("_ARRAY_API not found"), "2.1.3")
    assert fix is not None
    return fix


def clock_before_ntp(tmp: Path, caplog: pytest.LogCaptureFixture) -> str:
    eu = ("site: {jurisdiction: EU, context: retail, purpose: analytics, consent: signage, signage: "
          "{confirmed: 2026-03-02, notice_url: https://shop.example/privacy, controller: Shop Ltd}}\n")
    cfg = parse_config(f"schema_version: 1\ndevice_id: lobby-1\n{eu}", "agent.yaml")
    with caplog.at_level(logging.WARNING):
        assert date_for_policy(cfg, FakeClock(1_700_000_000.0), tmp / "not-synced") is None
    return caplog.text


def broker_unreachable(_tmp: Path) -> str:
    return explain("cannot connect to broker.example.internal:8883: ConnectionRefusedError: "
                   "[Errno 111] Connection refused")


Producer = Callable[[Path], str]
PRODUCERS: dict[str, Producer] = {
    "Duplicate persistence_location value in configuration": duplicate_persistence,
    "not a Raspberry Pi boot partition (no config.txt or cmdline.txt at its root)": not_a_boot_partition,
    "SHA256SUMS does not match the files: bundle left in place": tampered_bundle,
    "SHA256SUMS does not cover exactly once:": cut_checksums,
    "cannot stage": full_root_partition,
    "was provisioned before: keys/lobby-1.pub.jwk holds its public key": second_card_with_one_id,
    "unknown key (found 5); did you mean fps?": unknown_key_field,
    "unknown key (its value is not shown: the name says it may be a secret)": password_written_in_the_config,
    "readable beyond its owner; run `chmod 600": key_readable_by_others,
    "client certificate not found": no_client_certificate,
    "not a trusted key nor announced by a verified key-rotation": wrong_public_key,
    ("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2`"):
        picamera2_missing,
    ("picamera2 is installed but cannot load: apt's C extensions were built for numpy 1.x"):
        numpy_2_in_the_venv,
    "check mqtt.host, mqtt.port": broker_unreachable,
}
LOGGED = {"is not synchronised yet and the date checks would refuse this config": clock_before_ntp}


def table_messages() -> list[str]:
    """The backticked message of each row of the table under "## Troubleshooting"."""
    text = DOC.read_text()
    section = text[text.index("## Troubleshooting"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    out = []
    for row in rows[1:]:  # the first is the header
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        m = re.fullmatch(r"(`+) ?(.+?) ?\1", cells[1])  # `text`, or `` text with ` `` (CommonMark)
        assert m, f"docs/installing.md troubleshooting row without a `message`: {row}"
        out.append(m.group(2))
    return out


def test_every_row_has_a_producer_and_every_producer_a_row() -> None:
    assert sorted(table_messages()) == sorted([*PRODUCERS, *LOGGED])


@pytest.mark.parametrize("message", sorted(PRODUCERS))
def test_the_row_message_is_what_the_failure_prints(message: str, tmp_path: Path) -> None:
    assert message in PRODUCERS[message](tmp_path)


@pytest.mark.parametrize("message", sorted(LOGGED))
def test_the_logged_row_message_is_what_the_agent_logs(
    message: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert message in LOGGED[message](tmp_path, caplog)
