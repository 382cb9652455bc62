"""Install-path failures: a full card, a partial SHA256SUMS, a half import, check-config on the device."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[2]
IMPORTER = ROOT / "systemd" / "emotion-agent-import"
ME = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@pytest.fixture
def ca(lab_ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """The site CA (cert, key) of tests/deploy/conftest.py."""
    return lab_ca


def site_file(tmp: Path, ca: tuple[Path, Path], lab: bool = False) -> Path:
    site = tmp / "site.yml"
    text = (f"device_name: bus-7\nbroker: {{host: 10.0.0.2, ca_cert: {ca[0]}}}\n"
            "site: {jurisdiction: US, context: transport, purpose: safety}\n")
    if lab:
        text += f"lab_ca: {{cert: {ca[0]}, key: {ca[1]}}}\n"
    site.write_text(text)
    return site


def boot_dir(tmp: Path) -> Path:
    boot = tmp / "bootfs"
    boot.mkdir(exist_ok=True)
    (boot / "config.txt").write_text("arm_64bit=1\n")
    return boot


def importer(boot: Path, etc: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(IMPORTER), "--boot", str(boot), "--etc", str(etc), "--chown-as", ME],
                          capture_output=True, text=True, check=False, env=env)


def mtools(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=MTOOLS_ENV, check=False)


# 1. A full card: the failed provisioning leaves a partial bundle with the private key on it.
def test_a_full_card_keeps_no_partial_bundle_nor_private_key(tmp_path: Path, ca: tuple[Path, Path]) -> None:
    img = tmp_path / "small.img"
    subprocess.run(["mkfs.vfat", "-C", str(img), "200"], check=True, capture_output=True)
    (tmp_path / "config.txt").write_text("arm_64bit=1\n")
    (tmp_path / "filler").write_bytes(os.urandom(175_000))
    for f in ("config.txt", "filler"):
        assert mtools("mcopy", "-i", str(img), str(tmp_path / f), f"::/{f}").returncode == 0
    site = site_file(tmp_path, ca)
    assert main(["provision", "--site", str(site), "--boot", str(img)]) == 1  # "mcopy failed: Disk full"
    left = mtools("mdir", "-i", str(img), "-b", "::/emotion-agent")
    assert left.returncode != 0, f"partial bundle left on the card:\n{left.stdout}"


def test_after_a_full_card_a_second_try_is_not_refused_as_a_never_imported_bundle(
    tmp_path: Path, ca: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "small.img"
    subprocess.run(["mkfs.vfat", "-C", str(img), "200"], check=True, capture_output=True)
    (tmp_path / "config.txt").write_text("arm_64bit=1\n")
    (tmp_path / "filler").write_bytes(os.urandom(175_000))
    for f in ("config.txt", "filler"):
        assert mtools("mcopy", "-i", str(img), str(tmp_path / f), f"::/{f}").returncode == 0
    site = site_file(tmp_path, ca)
    assert main(["provision", "--site", str(site), "--boot", str(img)]) == 1
    assert mtools("mdel", "-i", str(img), "::/filler").returncode == 0  # installer frees space
    capsys.readouterr()
    code = main(["provision", "--site", str(site), "--boot", str(img)])
    assert code == 0, capsys.readouterr().err


# 2. SHA256SUMS must cover every file the MANIFEST installs (and the MANIFEST itself).
def test_a_file_missing_from_sha256sums_is_not_installed_unchecked(
    tmp_path: Path, ca: tuple[Path, Path]
) -> None:
    boot = boot_dir(tmp_path)
    assert main(["provision", "--site", str(site_file(tmp_path, ca)), "--boot", str(boot)]) == 0
    bundle = boot / "emotion-agent"
    sums = bundle / "SHA256SUMS"
    # a SHA256SUMS cut after its first lines (a partial copy); client.key truncated too
    sums.write_text("".join(sums.read_text().splitlines(keepends=True)[:4]))
    key = bundle / "client.key"
    key.write_bytes(key.read_bytes()[:40])
    etc = tmp_path / "etc"
    done = importer(boot, etc)
    assert done.returncode != 0, (
        "a truncated client.key not covered by SHA256SUMS was installed:\n" + done.stdout
    )
    assert not (etc / "client.key").exists()


# 3. A half import (failure part-way) must not leave a mixed identity behind.
def test_an_import_that_fails_part_way_leaves_the_previous_identity_whole(
    tmp_path: Path, ca: tuple[Path, Path]
) -> None:
    boot = boot_dir(tmp_path)
    site = site_file(tmp_path, ca, lab=True)  # lab CA: the bundle carries client.crt
    etc = tmp_path / "etc"
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    assert importer(boot, etc).returncode == 0
    before = {p.name: p.read_bytes() for p in etc.iterdir()}
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0  # the card again
    # `install` runs out of space on the last file, as on a full root partition
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "install").write_text(
        '#!/bin/sh\nfor a; do last=$a; done\n'
        'case "$last" in *.client.crt.new)'
        ' echo "install: error writing \'$last\': No space left on device" >&2; exit 1;; esac\n'
        'exec /usr/bin/install "$@"\n'
    )
    (fake / "install").chmod(0o755)
    done = importer(boot, etc, env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert done.returncode != 0
    after = {p.name: p.read_bytes() for p in etc.iterdir()}
    changed = sorted(n for n in before if after.get(n) != before[n])
    assert changed in ([], sorted(before)), (
        f"mixed identity: {changed} are the new bundle's, the rest the old one's "
        "(client.key new, client.crt old: TLS refuses the pair)"
    )


# 4. check-config on the device's own installed config (docs/coral.md: `emotion-agent check-config
#    -c /etc/emotion-agent/agent.yaml`): the bare key name provisioning writes is never found.
def test_check_config_finds_the_installed_device_key_of_a_provisioned_config(
    tmp_path: Path, ca: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = boot_dir(tmp_path)
    assert main(["provision", "--site", str(site_file(tmp_path, ca, lab=True)), "--boot", str(boot)]) == 0
    etc = tmp_path / "etc-emotion-agent"
    assert importer(boot, etc).returncode == 0
    conf = etc / "agent.yaml"
    state = tmp_path / "state"
    conf.write_text(conf.read_text().replace("/etc/emotion-agent", str(etc)) + f"state_dir: {state}\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)  # the installer's home, not /etc/emotion-agent
    capsys.readouterr()
    code = main(["check-config", "-c", str(conf)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "keygen" not in err


# 5. A batch that fails on its second card: the first card holds a bundle (a device that will
#    be deployed), keys/ holds its public key, but its line never reaches the verifier list.
def test_a_batch_failing_on_a_later_card_still_lists_the_cards_already_written(
    tmp_path: Path, ca: tuple[Path, Path]
) -> None:
    (tmp_path / "config.txt").write_text("arm_64bit=1\n")
    (tmp_path / "filler").write_bytes(os.urandom(175_000))
    good, full = tmp_path / "card1.img", tmp_path / "card2.img"
    subprocess.run(["mkfs.vfat", "-C", str(good), "8192"], check=True, capture_output=True)
    subprocess.run(["mkfs.vfat", "-C", str(full), "200"], check=True, capture_output=True)
    assert mtools("mcopy", "-i", str(good), str(tmp_path / "config.txt"), "::/config.txt").returncode == 0
    for f in ("config.txt", "filler"):
        assert mtools("mcopy", "-i", str(full), str(tmp_path / f), f"::/{f}").returncode == 0
    site = tmp_path / "site.yml"
    site.write_text(f"device_prefix: bus\nbroker: {{host: 10.0.0.2, ca_cert: {ca[0]}}}\n"
                    "site: {jurisdiction: US, context: transport, purpose: safety}\n")
    verifiers = tmp_path / "verifiers.jsonl"
    code = main(["provision", "--site", str(site), "--batch", "2", "--boot", str(good), "--boot", str(full),
                 "--out", str(tmp_path / "keys"), "--verifier-list", str(verifiers)])
    assert code == 1  # card 2: Disk full
    assert mtools("mdir", "-i", str(good), "-b", "::/emotion-agent/MANIFEST").returncode == 0  # card 1 done
    assert (tmp_path / "keys" / "bus-01.pub.jwk").exists()
    listed = verifiers.read_text() if verifiers.exists() else ""
    assert '"device_id":"bus-01"' in listed, (
        "card 1 (bus-01) is provisioned but missing from the verifier list"
    )


def test_check_config_names_the_full_path_of_a_missing_bare_key_beside_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc-emotion-agent"
    conf_dir.mkdir()
    (conf_dir / "agent.yaml").write_text(
        "schema_version: 1\ndevice_id: bus-7\nsite: {jurisdiction: US, context: transport, purpose: safety}\n"
        f"keys: {{private_key: device.key}}\nstate_dir: {tmp_path / 'state'}\nmqtt: {{enabled: false}}\n"
    )
    creds = tmp_path / "credentials"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["check-config", "-c", "etc-emotion-agent/agent.yaml"]) == 2  # a relative -c
    err = capsys.readouterr().err
    assert f"{conf_dir / 'device.key'}: device private key not found (nor in $CREDENTIALS_DIRECTORY" in err
    # the credential, when systemd gives one, wins over the file beside the config
    assert main(["keygen", "--out", str(creds)]) == 0
    capsys.readouterr()
    assert main(["check-config", "-c", "etc-emotion-agent/agent.yaml"]) == 0, capsys.readouterr().err
