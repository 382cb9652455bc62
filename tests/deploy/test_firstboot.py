"""The first-boot importer (systemd/emotion-agent-import): modes from MANIFEST, bundle removed."""

from __future__ import annotations

import grp
import os
import pwd
import re
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


TRACED = "openat,open,creat,truncate,ftruncate,write,fsync,fdatasync,unlink,unlinkat"
CALL = re.compile(r"^\d+ +(\w+)\((.*)\) += (-?\d+)(?:<(.*?)>)?")


def calls_on(trace: str, path: Path) -> list[tuple[str, str, int]]:
    """(system call, arguments, result) of each call of an ``strace -f -y`` log that names
    ``path``: by the fd's path (-y), an open's result, or a path resolved against its dirfd."""
    found = []
    for line in trace.splitlines():
        match = CALL.match(line)
        if match is None:
            continue
        call, args, result, opened = match.group(1), match.group(2), int(match.group(3)), match.group(4)
        named = re.match(r'(?:-?\d+|AT_FDCWD)<(.*?)>, "(.*?)"', args)
        target = Path(named.group(1), named.group(2)).resolve() if named else None
        if call == "truncate":
            target = Path(args.split('"')[1]).resolve()
        fd_path = re.match(r"\d+<(.*?)>", args)
        if str(path) in {opened, str(target), fd_path and fd_path.group(1)}:
            found.append((call, args, result))
    return found


def test_the_device_key_is_zeroed_in_place_and_synced_before_it_is_unlinked(
    provisioned_boot: Path, tmp_path: Path
) -> None:
    """Was: `head -c N /dev/zero > f` opened the key with O_TRUNC, so the card freed its blocks and
    the zeros went to new ones: the private key stayed readable on the boot partition."""
    key = provisioned_boot / "emotion-agent" / "device.key"
    original = key.read_bytes()
    etc = tmp_path / "etc-emotion-agent"
    log = tmp_path / "strace.log"
    done = subprocess.run(
        ["strace", "-f", "-y", "-s", "65536", "-o", str(log), "-e", f"trace={TRACED}",
         "sh", str(IMPORTER), "--boot", str(provisioned_boot), "--etc", str(etc), "--chown-as", ME],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (etc / "device.key").read_bytes() == original
    assert not key.exists()
    calls = calls_on(log.read_text(), key)
    names = [call for call, _, _ in calls]
    assert not {"truncate", "ftruncate"} & set(names), calls
    (unlinked,) = [i for i, call in enumerate(names) if call in {"unlink", "unlinkat"}]
    writable = [(i, args) for i, (call, args, _) in enumerate(calls)
                if call in {"open", "openat", "creat"} and re.search(r"O_WRONLY|O_RDWR", args)]
    assert writable, calls
    assert all("O_TRUNC" not in args and i < unlinked for i, args in writable), writable
    zeros = [(i, args, n) for i, (call, args, n) in enumerate(calls) if call == "write"]
    assert sum(n for _, _, n in zeros) == len(original), zeros
    assert all(re.search(r', "(\\0)+"', args) for _, args, _ in zeros), zeros  # zeros, all of them
    assert all(writable[0][0] < i < unlinked for i, _, _ in zeros), calls
    synced = [i for i, call in enumerate(names) if call in {"fsync", "fdatasync"}]
    assert any(zeros[-1][0] < i < unlinked for i in synced), calls
