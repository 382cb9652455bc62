"""The first-boot importer (systemd/emotion-agent-import): modes from MANIFEST, bundle removed."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parents[2]
IMPORTER = ROOT / "systemd" / "emotion-agent-import"
ME = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"


@pytest.fixture
def provisioned_boot(tmp_path: Path, lab_ca: tuple[Path, Path]) -> Path:
    """A mounted bootfs folder that `emotion-agent provision` has written a bundle into."""
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    site = tmp_path / "site.yml"
    site.write_text(
        f"device_name: bus-7\nbroker: {{host: 10.0.0.2, ca_cert: {lab_ca[0]}}}\n"
        "site: {jurisdiction: US, context: transport, purpose: safety}\n"
    )
    assert main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    return boot


def run_importer(boot: Path, etc: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(IMPORTER), "--boot", str(boot), "--etc", str(etc), "--chown-as", ME],
        capture_output=True,
        text=True,
        check=False,
    )


def test_import_installs_each_file_with_its_declared_mode_and_clears_the_boot_partition(
    provisioned_boot: Path, tmp_path: Path
) -> None:
    bundle = provisioned_boot / "emotion-agent"
    manifest = [line.split() for line in (bundle / "MANIFEST").read_text().splitlines() if line[0] != "#"]
    originals = {name: (bundle / name).read_bytes() for _, _, _, name in manifest}
    etc = tmp_path / "etc-emotion-agent"
    done = run_importer(provisioned_boot, etc)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in etc.iterdir()) == sorted(originals)
    for mode, _, _, name in manifest:
        installed = etc / name
        assert stat.S_IMODE(installed.stat().st_mode) == int(mode, 8), name
        assert installed.read_bytes() == originals[name]
    assert stat.S_IMODE((etc / "device.key").stat().st_mode) == 0o600
    assert not bundle.exists()
    assert sorted(p.name for p in provisioned_boot.iterdir()) == ["config.txt"]
    assert f"bundle imported and removed from {provisioned_boot}" in done.stdout


def test_a_tampered_bundle_is_refused_and_left_in_place(provisioned_boot: Path, tmp_path: Path) -> None:
    bundle = provisioned_boot / "emotion-agent"
    (bundle / "agent.yaml").write_text("schema_version: 1\ndevice_id: someone-else\n")
    etc = tmp_path / "etc-emotion-agent"
    done = run_importer(provisioned_boot, etc)
    assert done.returncode == 1
    assert "SHA256SUMS does not match the files: bundle left in place" in done.stderr
    assert not etc.exists()
    assert (bundle / "device.key").exists()


def test_no_bundle_means_nothing_to_do(tmp_path: Path) -> None:
    done = run_importer(tmp_path, tmp_path / "etc")
    assert done.returncode == 0
    assert f"no bundle at {tmp_path}/emotion-agent, nothing to do" in done.stdout
    assert not (tmp_path / "etc").exists()


def test_relative_boot_and_etc_paths_install_outside_the_bundle(
    provisioned_boot: Path, tmp_path: Path
) -> None:
    """Was: with relative paths the keys were copied inside the bundle and rmdir failed (exit 1)."""
    (tmp_path / "etc-rel").mkdir()
    done = subprocess.run(
        ["sh", str(IMPORTER), "--boot", provisioned_boot.name, "--etc", "etc-rel", "--chown-as", ME],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "etc-rel" / "device.key").is_file()
    assert not (provisioned_boot / "emotion-agent").exists()
