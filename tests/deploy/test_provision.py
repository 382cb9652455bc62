"""`emotion-agent provision`: exact bundle on a FAT image, modes declared, key never printed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.cli import main
from agent.config import RESERVED_DEVICE_IDS, load_config
from agent.provision.boot import fat_offset
from agent.provision.bundle import render_config
from agent.provision.keys import b64url, jwk_of
from agent.provision.site import load_site
from agent.strict_yaml import MAX_BYTES, MAX_VALUES, parse
from tests.test_config_paths import SETTINGS as PATH_KEYS

MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
ACL = Path(__file__).resolve().parents[2] / "firmware_config" / "mosquitto-emotion-agent.acl"

SITE = """site: {jurisdiction: EU, context: retail, purpose: analytics, consent: signage,
       signage: {confirmed: 2026-03-02, notice_url: "https://shop.example.com/privacy",
                 controller: "Example Retail GmbH, privacy@shop.example.com"}}
"""
EXPECTED = {
    "agent.yaml": "0640 root emotion-agent",
    "ca.crt": "0644 root root",
    "client.csr": "0644 root root",
    "client.key": "0640 root emotion-agent",
    "device.key": "0600 root root",
    "device.pub.jwk": "0644 root root",
}


def write_site(tmp: Path, ca: Path, extra: str = "", name: str = "device_name: lobby-1") -> Path:
    site = tmp / "site.yml"
    site.write_text(
        f"{name}\n"
        f"broker: {{host: broker.example.internal, port: 8883, ca_cert: {ca}}}\n"
        "organization: Example Retail\n"
        f"{SITE}"
        "agent: {analytics: {window_seconds: 60, min_people: 5}}\n" + extra
    )
    return site


def mtools(*args: str) -> str:
    """Run an mtools command and return its stdout (fails the test on error)."""
    done = subprocess.run(list(args), capture_output=True, text=True, env=MTOOLS_ENV, check=True)
    return done.stdout


def read_image(img: Path, name: str) -> bytes:
    """A file of the bundle, read back from the image with mcopy."""
    done = subprocess.run(
        ["mcopy", "-i", str(img), f"::/emotion-agent/{name}", "-"],
        capture_output=True,
        check=True,
        env=MTOOLS_ENV,
    )
    return done.stdout


def listed(img: Path) -> set[str]:
    out = mtools("mdir", "-i", str(img), "-b", "::/emotion-agent")
    return {line.rsplit("/", 1)[-1] for line in out.split()}


def test_fat_image_gets_exactly_the_bundle_with_declared_modes(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    site = write_site(tmp_path, lab_ca[0])
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 0
    out, err = capfd.readouterr()

    assert listed(fat_image) == {*EXPECTED, "MANIFEST", "SHA256SUMS"}
    manifest = read_image(fat_image, "MANIFEST").decode().splitlines()
    declared = {line.split()[3]: " ".join(line.split()[:3]) for line in manifest if not line.startswith("#")}
    assert declared == EXPECTED
    sums = read_image(fat_image, "SHA256SUMS").decode().splitlines()
    assert len(sums) == len(EXPECTED) + 1
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256(read_image(fat_image, name)).hexdigest() == digest, name

    device_pem = read_image(fat_image, "device.key")
    client_pem = read_image(fat_image, "client.key")
    for secret in (device_pem, client_pem):
        body = "".join(secret.decode().splitlines()[1:-1])
        assert body[:40] not in out + err
        assert "PRIVATE KEY" not in out + err

    key = serialization.load_pem_private_key(device_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    kid = jwk_of(key.public_key())["kid"]
    assert f"kid (public key fingerprint, RFC 7638): {kid}" in out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["device_id"] == "lobby-1"
    assert line["kid"] == kid
    assert Ed25519PublicKey.from_public_bytes(
        base64.urlsafe_b64decode(line["jwk"]["x"] + "=")
    ) == key.public_key()

    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_bytes(read_image(fat_image, "agent.yaml"))
    cfg = load_config(cfg_path)
    assert cfg.device_id == "lobby-1"
    assert cfg.mqtt.host == "broker.example.internal"
    assert cfg.mqtt.username == "lobby-1"
    assert str(cfg.keys.private_key) == "device.key"
    assert cfg.mqtt.tls is not None
    assert str(cfg.mqtt.tls.key) == "/etc/emotion-agent/client.key"
    assert cfg.vision.models_dir is None  # the installed package carries the models
    csr = x509.load_pem_x509_csr(read_image(fat_image, "client.csr"))
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "O=Example Retail,CN=lobby-1"


def test_kid_is_the_rfc8037_thumbprint() -> None:
    """RFC 8037 appendix A.3: the example Ed25519 key's JWK thumbprint."""
    raw = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    jwk = jwk_of(Ed25519PublicKey.from_public_bytes(raw))
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert b64url(raw) == jwk["x"]


def test_batch_stages_one_bundle_per_device_with_distinct_keys(
    tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    site = write_site(tmp_path, lab_ca[0], name="device_prefix: lobby")
    stage = tmp_path / "stage"
    stage.mkdir()
    verifiers = tmp_path / "verifiers.jsonl"
    code = main([
        "provision", "--site", str(site), "--boot", str(stage), "--batch", "3",
        "--out", str(tmp_path / "laptop"), "--verifier-list", str(verifiers),
    ])
    assert code == 0
    out, _ = capfd.readouterr()
    assert sorted(p.name for p in stage.iterdir()) == ["lobby-01", "lobby-02", "lobby-03"]
    assert f"staged in {stage}: these folders hold private keys" in out
    lines = [json.loads(x) for x in verifiers.read_text().splitlines()]
    assert [x["device_id"] for x in lines] == ["lobby-01", "lobby-02", "lobby-03"]
    assert len({x["kid"] for x in lines}) == 3
    for x in lines:
        assert x["kid"] in out
        cfg = load_config(stage / x["device_id"] / "emotion-agent" / "agent.yaml")
        assert cfg.device_id == x["device_id"]
    laptop = sorted(p.name for p in (tmp_path / "laptop").iterdir())
    assert laptop == sorted(f"lobby-0{i}{s}" for i in (1, 2, 3) for s in (".csr", ".pub.jwk"))


def test_partitioned_card_image_is_written_in_its_fat_partition(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """A whole-card image (MBR, FAT32-LBA partition at sector 2048) like a flashed Pi OS card."""
    mbr = bytearray(512)
    start, sectors = (2048).to_bytes(4, "little"), (16384).to_bytes(4, "little")
    mbr[446:462] = bytes([0x80, 0, 0, 0, 0x0C, 0, 0, 0]) + start + sectors
    mbr[510:512] = b"\x55\xaa"
    card = tmp_path / "card.img"
    card.write_bytes(bytes(mbr) + bytes(2048 * 512 - 512) + fat_image.read_bytes())
    assert fat_offset(card.read_bytes()[:512], "card") == 2048 * 512
    site = write_site(tmp_path, lab_ca[0])
    assert main(["provision", "--site", str(site), "--boot", str(card)]) == 0
    out, _ = capfd.readouterr()
    assert f"{card} (FAT at byte 1048576)" in out
    drive = f"{card}@@1048576"
    listing = mtools("mdir", "-i", drive, "-b", "::/emotion-agent")
    names = {line.rsplit("/", 1)[-1] for line in listing.split()}
    assert names == {*EXPECTED, "MANIFEST", "SHA256SUMS"}


def test_a_folder_that_is_not_a_boot_partition_is_refused(
    tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    site = write_site(tmp_path, lab_ca[0])
    target = tmp_path / "home"
    target.mkdir()
    assert main(["provision", "--site", str(site), "--boot", str(target)]) == 2
    _, err = capfd.readouterr()
    assert f"{target}: not a Raspberry Pi boot partition (no config.txt or cmdline.txt" in err
    assert list(target.iterdir()) == []


def test_an_unimported_bundle_is_kept_unless_forced(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    site = write_site(tmp_path, lab_ca[0])
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 0
    first = read_image(fat_image, "device.pub.jwk")
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 2
    _, err = capfd.readouterr()
    assert "already holds an emotion-agent bundle that was never imported; use --force" in err
    assert read_image(fat_image, "device.pub.jwk") == first
    assert main(["provision", "--site", str(site), "--boot", str(fat_image), "--force"]) == 0
    assert read_image(fat_image, "device.pub.jwk") != first
    assert listed(fat_image) == {*EXPECTED, "MANIFEST", "SHA256SUMS"}


def test_lab_ca_signs_a_client_certificate_for_the_device(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path]
) -> None:
    extra = f"lab_ca: {{cert: {lab_ca[0]}, key: {lab_ca[1]}, days: 30}}\n"
    site = write_site(tmp_path, lab_ca[0], extra)
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 0
    assert "client.crt" in listed(fat_image)
    cert = x509.load_pem_x509_certificate(read_image(fat_image, "client.crt"))
    ca = x509.load_pem_x509_certificate(lab_ca[0].read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "O=Example Retail,CN=lobby-1"
    key = serialization.load_pem_private_key(read_image(fat_image, "client.key"), password=None)
    assert cert.public_key() == key.public_key()


def test_site_file_errors_name_the_key_and_line(
    tmp_path: Path, fat_image: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yml"
    site.write_text("device_name: Lobby_1\nbroker: {host: b, prot: 8883}\n")
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 2
    _, err = capfd.readouterr()
    assert f"broker.ca_cert ({site}:2): required key is missing" in err
    assert f"broker.prot ({site}:2): unknown key (found 8883)" in err
    assert "device_name 'Lobby_1' is not a device id" in err


def test_site_agent_keys_are_validated_by_the_agent_schema(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    site = write_site(tmp_path, lab_ca[0], name="device_name: lobby-1\nagent: {camera: {fps: 500}}")
    site.write_text(site.read_text().replace("agent: {analytics: {window_seconds: 60, min_people: 5}}\n", ""))
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 2
    _, err = capfd.readouterr()
    assert "the site file's agent keys give lobby-1 an invalid config" in err
    assert "camera.fps" in err
    assert "less than or equal to 60" in err


@pytest.mark.parametrize(
    "case",
    [
        ("  camera:\n    source: picamera2\n    fps: 500\n", None,
         "agent.camera.fps ({site}:11): Input should be less than or equal to 60 (found 500)"),
        ("  policy: {zones: [{name: desk}]}\n", None,
         "agent.policy.zones.0.polygon ({site}:9): required key is missing"),
        ("  camera: {fps: 0.1}\n", None,  # a rule across keys: at the agent: line
         "agent ({site}:7): camera.fps (0.1) analyses one frame every 10 s"),
        ("", ("jurisdiction: EU", "jurisdiction: Europe"),
         "site.jurisdiction ({site}:4): String should match pattern"),
        ("", ("host: broker.example.internal", "host: broker..example"),  # as the site file loads
         "broker.host ({site}:2): 'broker..example' has an empty label"),
    ],
    ids=["agent.camera.fps", "a list item", "across keys", "site", "broker.host"],
)
def test_an_invalid_value_of_the_config_is_named_at_its_site_file_key_and_line(
    case: tuple[str, tuple[str, str] | None, str], tmp_path: Path, lab_ca: tuple[Path, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Was: at a line of <device>/agent.yaml (``camera.fps (lobby-1/agent.yaml:6)``), the config
    built from the site file, which is never written when it is invalid."""
    agent_lines, edit, problem = case
    site = site_with(tmp_path, lab_ca[0], agent_lines)
    if edit is not None:
        site.write_text(site.read_text().replace(*edit))
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    assert problem.format(site=site) in " ".join(err.split()), err
    assert "agent.yaml" not in err
    assert not (boot / "emotion-agent").exists()


def values_in(data: object) -> int:
    """How many values the YAML reader counts in ``data``: each key, scalar, list and mapping."""
    if isinstance(data, dict):
        return 1 + sum(1 + values_in(value) for value in data.values())
    if isinstance(data, list):
        return 1 + sum(values_in(item) for item in data)
    return 1


@pytest.mark.parametrize(
    ("agent_line", "said"),
    [
        ("  policy: {zones: [{name: door, polygon: [ITEMS]}]}\n",
         r"more than (?P<allowed>\d+) values \((?P<found>\d+) in all\); a config is smaller than that"),
        ("  " + "".join(f"k{i}: {{" for i in range(15)) + "list: [ITEMS]" + "}" * 15 + "\n",
         r"(?P<found>\d+) bytes is too large for a config \(at most (?P<allowed>\d+)\)"),
    ],
    ids=["values", "bytes"],
)
def test_a_config_built_over_the_yaml_readers_limits_says_which_limit(
    agent_line: str, said: str, tmp_path: Path, lab_ca: tuple[Path, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Was: "the site file's agent keys give lobby-1 an invalid config" and no reason: the site
    file is just under the reader's limits, the config built from it over them (it adds the keys
    provisioning sets and writes a list one item a line), and the reader's refusal has no list of
    problems to copy. The values case fills the site file to the limit exactly."""
    site = site_with(tmp_path, lab_ca[0], agent_line.replace("ITEMS", ""))
    data, _ = parse(site.read_text())
    items = MAX_VALUES - values_in(data) if "zones" in agent_line else 12_000
    site.write_text(site.read_text().replace("[]", "[" + ", ".join(["1"] * items) + "]"))
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    assert "a config too large for the agent to read" in err, err
    assert f"agent ({site}:7): the config built from it: " in err, err
    limit = re.search(f"{said}. It holds this section", err)
    assert limit is not None, err
    assert int(limit["allowed"]) in (MAX_VALUES, MAX_BYTES)
    assert int(limit["found"]) > int(limit["allowed"])
    assert "make agent: smaller" in err, err
    assert not (boot / "emotion-agent").exists()


def test_a_site_the_policy_refuses_is_not_provisioned(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """EU workplace analytics is banned (AI Act Art. 5(1)(f)): caught on the laptop, not on site."""
    site = write_site(tmp_path, lab_ca[0])
    site.write_text(site.read_text().replace("context: retail", "context: workplace"))
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 2
    _, err = capfd.readouterr()
    assert "lobby-1 would refuse to start: policy refuses emotion inference at this site" in err
    assert "EU AI Act Art. 5(1)(f)" in err
    assert "emotion-agent" not in listed_or_empty(fat_image)


def listed_or_empty(img: Path) -> str:
    done = subprocess.run(["mdir", "-i", str(img), "-b", "::/"], capture_output=True, text=True,
                          env=MTOOLS_ENV, check=False)
    return done.stdout


def test_batch_staging_folder_is_made_when_missing(tmp_path: Path, lab_ca: tuple[Path, Path]) -> None:
    """Was: a staging folder that did not exist yet was refused ("no such folder")."""
    site = write_site(tmp_path, lab_ca[0], name="device_prefix: lobby")
    stage = tmp_path / "new" / "stage"
    assert main(["provision", "--site", str(site), "--boot", str(stage), "--batch", "2"]) == 0
    assert sorted(p.name for p in stage.iterdir()) == ["lobby-01", "lobby-02"]


def test_the_shipped_example_site_file_provisions_one_card_as_documented(
    tmp_path: Path, lab_ca: tuple[Path, Path]
) -> None:
    """docs/installing.md's first command with firmware_config/sites/site-example.yml, no --batch."""
    example = Path(__file__).resolve().parents[2] / "firmware_config/sites/site-example.yml"
    site = tmp_path / "site.yml"
    site.write_text(example.read_text())
    (tmp_path / "site-ca.crt").write_bytes(lab_ca[0].read_bytes())
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    assert (boot / "emotion-agent/agent.yaml").read_text().count("device_id: lobby-1") == 1


def site_with(tmp: Path, ca: Path, agent_lines: str) -> Path:
    """write_site's file with its agent section in block style and ``agent_lines`` added to it
    (the first on line 9)."""
    site = write_site(tmp, ca)
    site.write_text(site.read_text().replace(
        "agent: {analytics: {window_seconds: 60, min_people: 5}}\n",
        "agent:\n  analytics: {window_seconds: 60, min_people: 5}\n" + agent_lines,
    ))
    return site


def bootfs(tmp: Path) -> Path:
    """A mounted boot partition: a folder with config.txt."""
    boot = tmp / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    return boot


RELATIVE = [
    ("state_dir", "state_dir: state", "state", "/etc/emotion-agent/state"),
    ("outputs.jsonl", "outputs: {jsonl: stats.jsonl}", "stats.jsonl", "/etc/emotion-agent/stats.jsonl"),
    ("mqtt.password_file", "mqtt: {password_file: mqtt.pw}", "mqtt.pw", "/etc/emotion-agent/mqtt.pw"),
    ("mqtt.commands.operator_key", "mqtt: {commands: {operator_key: keys/op.pub}}", "keys/op.pub",
     "/etc/emotion-agent/keys/op.pub"),
    ("policy.privacy_mode.flag_file", "policy: {privacy_mode: {flag_file: privacy}}", "privacy",
     "/etc/emotion-agent/privacy"),
    ("vision.models_dir", "vision: {models_dir: models}", "models", "/etc/emotion-agent/models"),
    ("camera.source", "camera: {source: clips/lobby.mp4}", "clips/lobby.mp4",
     "/etc/emotion-agent/clips/lobby.mp4"),
    ("camera.source", "camera: {source: 'file:clip.mp4'}", "file:clip.mp4", "/etc/emotion-agent/clip.mp4"),
]
"""A relative value of each path key a site file's agent: section can set, and where the device
reads it (from its config's folder, /etc/emotion-agent)."""
SET_BY_PROVISIONING = {"keys.private_key", "mqtt.tls.ca", "mqtt.tls.cert", "mqtt.tls.key"}
"""Path keys the bundle sets itself: its device key by bare name (systemd's credential), its TLS
files by full path."""


def test_every_path_key_a_site_file_can_set_is_checked_here() -> None:
    assert {key for key, *_ in RELATIVE} == set(PATH_KEYS) - SET_BY_PROVISIONING


@pytest.mark.parametrize("case", RELATIVE, ids=lambda case: case[1])
def test_a_relative_path_under_agent_is_refused_naming_its_site_file_key_and_line(
    case: tuple[str, str, str, str], tmp_path: Path, lab_ca: tuple[Path, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Was: exit 0. The device reads a relative path from its config's folder, /etc/emotion-agent
    (since 6214337): read-only to the service (ProtectSystem=strict), holding only the bundle's
    files, so state_dir: state failed at start and a relative file was never there."""
    key, line, value, on_device = case
    site = site_with(tmp_path, lab_ca[0], f"  {line}\n")
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    assert f"agent.{key} ({site}:9): {value!r} is relative: on the device it is {on_device}" in err, err
    assert "Traceback" not in err
    assert not (boot / "emotion-agent").exists()


@pytest.mark.parametrize(
    ("line", "instead"),
    [
        ("state_dir: state", "leave state_dir out (its default is /var/lib/emotion-agent) or write "
         "a full path under /var/lib/emotion-agent, e.g. /var/lib/emotion-agent/state"),
        ("outputs: {jsonl: out/stats.jsonl}", "write a full path under /var/lib/emotion-agent, "
         "e.g. /var/lib/emotion-agent/stats.jsonl"),
        ("mqtt: {password_file: mqtt.pw}", "write the full path it will have on the device (e.g. "
         "/etc/emotion-agent/mqtt.pw, put there by hand: the bundle brings only its own files)"),
    ],
    ids=["state_dir", "outputs.jsonl", "mqtt.password_file"],
)
def test_the_refusal_says_what_to_write_instead(
    line: str, instead: str, tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """What the service writes goes under its StateDirectory; other files are named in full.
    One mistake is one problem: a relative outputs.jsonl was also said to be outside the state
    folder, under a path the installer never wrote (found by a new user's trial)."""
    site = site_with(tmp_path, lab_ca[0], f"  {line}\n")
    assert main(["provision", "--site", str(site), "--boot", str(bootfs(tmp_path))]) == 2
    _, err = capfd.readouterr()
    assert f"; {instead}" in " ".join(err.split()), err
    assert "1 path(s) under agent:" in err, err
    assert "is outside" not in err, err


@pytest.mark.parametrize(
    "case",
    [
        ("state_dir: /srv/emotion-agent", "state_dir", "/srv/emotion-agent"),
        ("outputs: {jsonl: /home/pi/stats.jsonl}", "outputs.jsonl", "/home/pi/stats.jsonl"),
        ("state_dir: /var/lib/emotion-agent-old", "state_dir", "/var/lib/emotion-agent-old"),
    ],
    ids=["state_dir", "outputs.jsonl", "a sibling folder"],
)
def test_a_folder_the_service_would_write_outside_its_state_directory_is_refused(
    case: tuple[str, str, str], tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str],
) -> None:
    """Was: exit 0, and the device refused to start (``is on a read-only file system``): under
    ProtectSystem=strict the service writes only its StateDirectory=, /var/lib/emotion-agent,
    and the bundle brings no drop-in that adds another folder."""
    line, key, value = case
    site = site_with(tmp_path, lab_ca[0], f"  {line}\n")
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    said = " ".join(err.split())
    assert (
        f"agent.{key} ({site}:9): {value!r} is outside /var/lib/emotion-agent, the only folder the "
        "service may write (ProtectSystem=strict, StateDirectory=)"
    ) in said, err
    assert "Traceback" not in err
    assert not (boot / "emotion-agent").exists()


def test_full_paths_under_agent_reach_the_device_as_written(
    tmp_path: Path, lab_ca: tuple[Path, Path]
) -> None:
    """The keys the bundle sets stay as they were: the device key by bare name (systemd's
    credential, LoadCredential=), the CA and client files in full under /etc/emotion-agent."""
    site = site_with(
        tmp_path, lab_ca[0], "  state_dir: /var/lib/emotion-agent/lobby\n"
        "  outputs: {jsonl: /var/lib/emotion-agent/stats.jsonl}\n"
        "  camera: {source: 'file:/srv/clips/lobby.mp4'}\n",
    )
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    cfg = load_config(boot / "emotion-agent" / "agent.yaml")  # relative paths: from this folder
    assert cfg.state_dir == Path("/var/lib/emotion-agent/lobby")
    assert cfg.outputs.jsonl == "/var/lib/emotion-agent/stats.jsonl"
    assert cfg.camera.source == "file:/srv/clips/lobby.mp4"
    assert cfg.keys.private_key == Path("device.key")
    assert cfg.mqtt.tls is not None
    assert (cfg.mqtt.tls.ca, cfg.mqtt.tls.cert, cfg.mqtt.tls.key) == (
        Path("/etc/emotion-agent/ca.crt"), Path("/etc/emotion-agent/client.crt"),
        Path("/etc/emotion-agent/client.key"),
    )


SET_BY_PROVISIONING_FROM = [
    ("schema_version", "schema_version: 1", "1", "to the schema version this agent reads: leave it out"),
    ("device_id", "device_id: lobby-9", "'lobby-9'", "from the site file's device_name: name the device "
     "there (or a series: device_prefix, --batch)"),
    ("site", "site: {jurisdiction: EU}", "a mapping", "from the site file's site: write the section "
     "there, at the top level"),
    ("mqtt.host", "mqtt: {host: other.example}", "'other.example'", "from the site file's "
     "broker.host: write it there instead"),
    ("mqtt.port", "mqtt: {port: 1883}", "1883", "from the site file's broker.port: write it there instead"),
    ("mqtt.username", "mqtt: {username: shared}", "'shared'", "from the site file's username: write "
     "it there instead (by default the device id)"),
    ("mqtt.tls.ca", "mqtt: {tls: {ca: /etc/ssl/mine.crt}}", "'/etc/ssl/mine.crt'", "from the site "
     "file's broker.ca_cert: name the CA file on this computer there (installed as "
     "/etc/emotion-agent/ca.crt)"),
    ("mqtt.tls.cert", "mqtt: {tls: {cert: /etc/ssl/lobby.crt}}", "'/etc/ssl/lobby.crt'", "to the "
     "device's own client certificate, /etc/emotion-agent/client.crt (signed by lab_ca, or by the "
     "site CA from the bundle's client.csr): leave it out"),
    ("mqtt.tls.key", "mqtt: {tls: {key: /etc/ssl/lobby.key}}", "'/etc/ssl/lobby.key'", "to the "
     "device's own client key, /etc/emotion-agent/client.key, made with its bundle: leave it out"),
    ("keys.private_key", "keys: {private_key: /etc/emotion-agent/other.key}",
     "'/etc/emotion-agent/other.key'", "to the device's own signing key, device.key, made with its "
     "bundle (a systemd credential): leave it out"),
    ("mqtt.tls", "mqtt: {tls: null}", "None", "with mqtt.tls.ca, mqtt.tls.cert, mqtt.tls.key in it: "
     "leave it out"),
    ("mqtt", "mqtt: off", "'off'", "with mqtt.host, mqtt.port, mqtt.username, mqtt.tls.ca, "
     "mqtt.tls.cert, mqtt.tls.key in it: leave it out"),
]
"""Each key of the device config provisioning sets, and the sections it writes into, as a site
file's agent: section may write them, with the value found and what the refusal says to do."""
SECTIONS = {"mqtt", "mqtt.tls"}


def leaf_keys(data: dict[str, object], key: str = "") -> set[str]:
    """The dotted keys of a config's values (site: counts as one: it is the site file's own)."""
    keys = set()
    for name, value in data.items():
        here = f"{key}{name}"
        keys |= leaf_keys(value, f"{here}.") if isinstance(value, dict) and here != "site" else {here}
    return keys


def test_every_key_provisioning_sets_is_checked_here(tmp_path: Path, lab_ca: tuple[Path, Path]) -> None:
    site = write_site(tmp_path, lab_ca[0])
    site.write_text(site.read_text().replace("agent: {analytics: {window_seconds: 60, min_people: 5}}\n", ""))
    rendered = yaml.safe_load(render_config(load_site(site), "lobby-1", has_cert=True))
    assert {key for key, *_ in SET_BY_PROVISIONING_FROM} - SECTIONS == leaf_keys(rendered)


@pytest.mark.parametrize("case", SET_BY_PROVISIONING_FROM, ids=lambda case: case[1])
def test_a_key_provisioning_sets_is_refused_under_agent_naming_the_site_file_key_that_sets_it(
    case: tuple[str, str, str, str], tmp_path: Path, lab_ca: tuple[Path, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Was: exit 0 with the site file's value dropped for provisioning's (mqtt.host, port, username,
    tls), or, for device_id, schema_version, site and keys, one refusal at the agent: line."""
    key, line, found, how = case
    site = site_with(tmp_path, lab_ca[0], f"  {line}\n")
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    assert f"agent.{key} ({site}:9): set by provisioning (found {found}) {how}" in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not (boot / "emotion-agent").exists()


def test_mqtt_keys_provisioning_does_not_set_reach_the_device(
    tmp_path: Path, lab_ca: tuple[Path, Path]
) -> None:
    site = site_with(tmp_path, lab_ca[0], "  mqtt: {keepalive_seconds: 60, client_id: lobby-cam, tls: {}}\n")
    boot = bootfs(tmp_path)
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    cfg = load_config(boot / "emotion-agent" / "agent.yaml")
    assert (cfg.mqtt.keepalive_seconds, cfg.mqtt.client_id) == (60, "lobby-cam")
    assert (cfg.mqtt.host, cfg.mqtt.username) == ("broker.example.internal", "lobby-1")


@pytest.mark.parametrize("name", ["homeassistant", "emotion-agent-fleet", "site"])
def test_a_device_id_the_broker_acl_gives_other_rights_is_refused(
    name: str, tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """Was provisioned: its certificate's CN, and so its MQTT username, got Home Assistant's or the
    fleet's rights from the shipped ACL, or (site) wrote the fleet's emotion-agent/site/ rollups."""
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    site = write_site(tmp_path, lab_ca[0], name=f"device_name: {name}")
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 2
    _, err = capfd.readouterr()
    assert f"device_name ({site}:1): device_name {name!r} is reserved: {RESERVED_DEVICE_IDS[name]}" in err
    assert sorted(p.name for p in boot.iterdir()) == ["config.txt"]


def acl_special_names(acl: str) -> set[str]:
    """The usernames an ACL gives rights of their own: each `user` section's, and each name that a
    `pattern`'s %u would have to be to reach a topic a `user` line names literally there
    (`topic write emotion-agent/site/#` against `pattern write emotion-agent/%u/#`: site)."""
    users, patterns, topics = set(), [], []
    for line in acl.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            users.add(words[1])
        elif words[0] in ("pattern", "topic"):
            (patterns if words[0] == "pattern" else topics).append(words[-1])
    for pattern in patterns:
        for topic in topics:
            for mine, theirs in zip(pattern.split("/"), topic.split("/"), strict=False):
                if "%u" in mine:
                    named = re.fullmatch(re.escape(mine).replace("%u", "(.+)"), theirs)
                    if named and not {"+", "#"} & set(theirs):
                        users.add(named.group(1))
                    break
                if mine != theirs and "+" not in (mine, theirs):
                    break
    return users


def test_the_reserved_device_ids_are_exactly_the_broker_acls_special_usernames() -> None:
    assert acl_special_names(ACL.read_text()) == set(RESERVED_DEVICE_IDS)
    # the reading would see a new client or a new shared topic
    extra = "user node-red\ntopic write emotion-agent/dashboard/#\n"
    assert acl_special_names(ACL.read_text() + extra) == {*RESERVED_DEVICE_IDS, "node-red", "dashboard"}


def card(tmp_path: Path, name: str) -> Path:
    """A mounted bootfs folder of a freshly flashed card."""
    boot = tmp_path / name
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    return boot


@pytest.mark.parametrize("record", ["--out", "--verifier-list"])
def test_a_device_id_provisioned_before_is_refused_naming_the_file_that_holds_it(
    record: str, tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """Was: a second card for lobby-1 (site.yml not edited) silently replaced keys/lobby-1.pub.jwk
    and appended a second trusted key for lobby-1: two Pis with one certificate CN, one MQTT identity."""
    site = write_site(tmp_path, lab_ca[0])
    where = {"--out": tmp_path / "keys", "--verifier-list": tmp_path / "verifiers.jsonl"}[record]
    argv = ["provision", "--site", str(site), record, str(where)]
    assert main([*argv, "--boot", str(card(tmp_path, "card-1"))]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capfd.readouterr()
    second = card(tmp_path, "card-2")
    assert main([*argv, "--boot", str(second)]) == 2
    _, err = capfd.readouterr()
    holder = {"--out": f"{where}/lobby-1.pub.jwk", "--verifier-list": f"{where} (line 1)"}[record]
    assert err == (
        f"emotion-agent: error: device id lobby-1 was provisioned before: {holder} holds its public key; "
        "give this card another device name, or use --replace to give lobby-1 a new key (its old card is "
        "then no longer trusted)\n"
    )
    assert sorted(p.name for p in second.iterdir()) == ["config.txt"]
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_replace_gives_a_device_id_provisioned_before_a_new_key_in_place_of_the_old(
    tmp_path: Path, lab_ca: tuple[Path, Path]
) -> None:
    keys, listed = tmp_path / "keys", tmp_path / "verifiers.jsonl"
    other = '{"device_id":"lobby-9","kid":"k9"}'
    listed.write_text(other + "\n")
    signed = f"lab_ca: {{cert: {lab_ca[0]}, key: {lab_ca[1]}}}\n"
    argv = ["provision", "--out", str(keys), "--verifier-list", str(listed)]
    assert main([*argv, "--site", str(write_site(tmp_path, lab_ca[0], signed)), "--boot",
                 str(card(tmp_path, "card-1"))]) == 0
    assert (keys / "lobby-1.crt").exists()
    second = card(tmp_path, "card-2")  # re-provisioned without the lab CA: a CSR for the site's PKI
    site = write_site(tmp_path, lab_ca[0])
    assert main([*argv, "--site", str(site), "--boot", str(second), "--replace"]) == 0
    new_key = json.loads((second / "emotion-agent/device.pub.jwk").read_text())
    assert json.loads((keys / "lobby-1.pub.jwk").read_text()) == new_key
    assert sorted(p.name for p in keys.iterdir()) == ["lobby-1.csr", "lobby-1.pub.jwk"]  # old .crt gone
    lines = listed.read_text().splitlines()
    assert lines[0] == other
    assert [json.loads(x)["kid"] for x in lines[1:]] == [new_key["kid"]]


def test_without_out_or_a_verifier_list_it_says_nothing_was_kept_here(
    tmp_path: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """Without --out, a device id provisioned twice got two keys, both exit 0, and nothing on the
    laptop recorded either (found by a new user's trial): it is said, with what to give."""
    site = site_with(tmp_path, lab_ca[0], "")
    assert main(["provision", "--site", str(site), "--boot", str(bootfs(tmp_path))]) == 0
    _, err = capfd.readouterr()
    said = " ".join(err.split())
    assert "nothing was kept on this computer" in said, err
    assert "--out DIR --verifier-list FILE" in said, err
    other = tmp_path / "second"
    other.mkdir()
    keep = ["--out", str(tmp_path / "keep"), "--verifier-list", str(tmp_path / "verifiers.jsonl")]
    assert main(["provision", "--site", str(site), "--boot", str(bootfs(other)), *keep]) == 0
    _, err = capfd.readouterr()
    assert "nothing was kept" not in err


def test_a_signage_date_after_today_is_not_provisioned(
    tmp_path: Path, fat_image: Path, lab_ca: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """The service refuses a signage confirmation dated after today (policy.md); provisioning
    checked the policy without a date and wrote the card, which then would not start (found by
    a new-user trial)."""
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    site = write_site(tmp_path, lab_ca[0])
    site.write_text(site.read_text().replace("confirmed: 2026-03-02", f"confirmed: {tomorrow.isoformat()}"))
    assert main(["provision", "--site", str(site), "--boot", str(fat_image)]) == 2
    _, err = capfd.readouterr()
    assert f"site.signage.confirmed is {tomorrow.isoformat()}, after today" in err
    assert "emotion-agent" not in listed_or_empty(fat_image)
