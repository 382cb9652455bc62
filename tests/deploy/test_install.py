"""tools/install against a throw-away root: exactly the files it lists, uninstall removes them;
the unit passes `systemd-analyze security` (exposure <= 1.5) and `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "tools" / "install"
UNIT = ROOT / "systemd" / "emotion-agent.service"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, check=False)


def files_under(root: Path, skip: str | None = None) -> set[str]:
    """Every non-directory below root, as an absolute path inside root."""
    found = set()
    for path in root.rglob("*"):
        rel = "/" + str(path.relative_to(root))
        if skip and rel.startswith(skip):
            continue
        if not path.is_dir() or path.is_symlink():
            found.add(rel)
    return found


def listed(*extra: str) -> list[str]:
    done = run("--list", *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:-1]


def test_install_lays_down_exactly_the_listed_files_and_is_idempotent(tmp_path: Path) -> None:
    files = listed("--skip-venv")
    assert "/etc/systemd/system/emotion-agent.service" in files
    assert "/opt/emotion-agent/libexec/emotion-agent-import" in files
    first = run("--root", str(tmp_path), "--skip-venv")
    assert first.returncode == 0, first.stderr
    assert files_under(tmp_path) == set(files)
    snapshot = {f: (tmp_path / f[1:]).read_bytes() for f in files}
    again = run("--root", str(tmp_path), "--skip-venv")
    assert again.returncode == 0, again.stderr
    assert {f: (tmp_path / f[1:]).read_bytes() for f in files_under(tmp_path)} == snapshot
    assert (tmp_path / "opt/emotion-agent/INSTALLED").read_text().split("\n")[:-1] == files
    assert (tmp_path / "etc/systemd/system/emotion-agent.service").read_bytes() == UNIT.read_bytes()
    importer = tmp_path / "opt/emotion-agent/libexec/emotion-agent-import"
    assert stat.S_IMODE(importer.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "etc/emotion-agent").stat().st_mode) == 0o750


def test_uninstall_removes_every_file_and_says_what_data_it_keeps(tmp_path: Path) -> None:
    assert run("--root", str(tmp_path), "--skip-venv").returncode == 0
    (tmp_path / "etc/emotion-agent/device.key").write_text("key")
    done = run("--root", str(tmp_path), "--uninstall")
    assert done.returncode == 0, done.stderr
    assert files_under(tmp_path) == {"/etc/emotion-agent/device.key"}
    assert not (tmp_path / "opt/emotion-agent").exists()
    assert f"{tmp_path}/etc/emotion-agent      device key (the device's identity)" in done.stdout
    assert f"{tmp_path}/var/lib/emotion-agent  audit log and unsent messages" in done.stdout
    purge = run("--root", str(tmp_path), "--uninstall", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert files_under(tmp_path) == set()
    assert "purged: /etc/emotion-agent /var/lib/emotion-agent" in purge.stdout


def test_install_refuses_unknown_options() -> None:
    done = run("--rooot", "/tmp/x")
    assert done.returncode == 2
    assert "install: unknown option '--rooot' (see --help)" in done.stderr


def exposure(unit: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_service_unit_exposure_is_at_most_1_5() -> None:
    assert exposure(UNIT) <= 1.5


def test_security_check_would_catch_a_weakened_unit(tmp_path: Path) -> None:
    """The score really moves: without the sandbox lines the same unit is far above 1.5."""
    weak = tmp_path / "emotion-agent.service"
    kept = [
        line for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "CapabilityBounding"))
    ]
    weak.write_text("\n".join(kept) + "\n")
    assert exposure(weak) > 5


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once (pip wheel, isolated build as CI would)."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    subprocess.run([*pip, str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("emotion_agent-*.whl")
    return found


@pytest.mark.slow
def test_real_venv_install_then_systemd_verify_and_uninstall(tmp_path: Path, wheel: Path) -> None:
    legacy = tmp_path / "opt/emotion-agent/models"  # an older install copied the models here
    legacy.mkdir(parents=True)
    (legacy / "emotion_fer.tflite").write_bytes(b"stale")
    done = run("--root", str(tmp_path), "--wheel", str(wheel), "--no-deps")
    assert done.returncode == 0, done.stderr
    venv = tmp_path / "opt/emotion-agent/venv"
    # the models come from the wheel; the old path is now a relative link to them
    assert legacy.is_symlink()
    assert str(legacy.readlink()).startswith("venv/lib/python")
    assert legacy.resolve() == next(venv.glob("lib/python*/site-packages/agent/_models")).resolve()
    assert (legacy / "manifest.json").read_bytes() == (ROOT / "models/manifest.json").read_bytes()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    exe = venv / "bin/emotion-agent"
    assert exe.is_file()
    assert exe.stat().st_mode & stat.S_IXUSR
    assert "emotion-agent 0.1.0 (no deps)" in done.stdout
    assert files_under(tmp_path, skip="/opt/emotion-agent/venv/") == {
        f for f in listed() if not f.endswith("(tree)")
    }
    # verify resolves units and ExecStart= inside the root; the stock targets come from the host.
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    check = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}",
         "emotion-agent.service", "emotion-agent-firstboot.service"],
        capture_output=True, text=True, check=False,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    exe.unlink()
    broken = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", "emotion-agent.service"],
        capture_output=True, text=True, check=False,
    )
    assert "Command /opt/emotion-agent/venv/bin/emotion-agent is not executable" in broken.stderr
    shutil.rmtree(tmp_path / "usr")
    gone = run("--root", str(tmp_path), "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert files_under(tmp_path) == set()
