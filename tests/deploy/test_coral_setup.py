"""tools/coral-setup in a golden-image root with a fake apt (chroot) and a fake download (curl):
the files it writes, the packages it asks apt for, and the service user's groups for the Edge TPU
(systemd-sysusers run on a root with the sysusers file tools/install lays down)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.overlay import OverlayRoot

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "tools" / "coral-setup"
SYSUSERS = ROOT / "systemd" / "emotion-agent.sysusers"
UNIT = ROOT / "systemd" / "emotion-agent.service"
ARMORED = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFake\n-----END PGP PUBLIC KEY BLOCK-----\n"

FAKE_CHROOT = """#!/bin/sh
echo "chroot $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-unset}" >> "$FAKE_LOG"
"""
FAKE_CURL = """#!/bin/sh
echo "curl $*" >> "$FAKE_LOG"
out=/dev/stdout
while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2;; *) shift;; esac; done
printf '%s' "$FAKE_KEY" > "$out"
"""
APEX_RULE = 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"\n'
DOC = ROOT / "docs" / "coral.md"


def by_hand_block() -> str:
    """The shell block under docs/coral.md's "By hand" heading."""
    text = DOC.read_text().split("### By hand", 1)[1]
    return text.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    """PATH with a chroot and a curl that only log their arguments (curl writes FAKE_KEY)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("chroot", FAKE_CHROOT), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_FRONTEND"}
    return {
        **env,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "log"),
        "FAKE_KEY": ARMORED,
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty folder standing for a Pi's root partition."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def setup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SETUP), *args], capture_output=True, text=True, check=False, env=env)


def log(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


def files(root: Path) -> dict[str, str]:
    return {
        "/" + str(p.relative_to(root)): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()
    }


def test_usb_setup_adds_coral_repository_with_its_key_and_installs_libedgetpu1_std(
    root: Path, fakes: dict[str, str]
) -> None:
    done = setup(fakes, "--root", str(root), "--usb")
    assert done.returncode == 0, done.stderr
    assert files(root) == {
        "/etc/apt/sources.list.d/coral-edgetpu.list": "deb [signed-by=/etc/apt/keyrings/coral-edgetpu.asc] "
        "https://packages.cloud.google.com/apt coral-edgetpu-stable main\n",
        "/etc/apt/keyrings/coral-edgetpu.asc": ARMORED,
    }
    download, *apt = log(fakes)
    assert download.startswith("curl -fsSL --retry 3 -o ")
    assert download.endswith(" https://packages.cloud.google.com/apt/doc/apt-key.gpg")
    assert apt == [
        f"chroot {root} apt-get update DEBIAN_FRONTEND=unset",
        f"chroot {root} apt-get install -y libedgetpu1-std DEBIAN_FRONTEND=noninteractive",
    ]
    assert "the agent's user joins plugdev and apex at first boot" in done.stdout


def test_pcie_setup_installs_gasket_dkms_and_gives_apex_nodes_to_group_apex(
    tmp_path: Path, root: Path, fakes: dict[str, str]
) -> None:
    key = tmp_path / "coral.gpg"
    key.write_bytes(b"\x99\x01\x0dbinary keyring")
    done = setup(fakes, "--root", str(root), "--pcie", "--key", str(key))
    assert done.returncode == 0, done.stderr
    written = files(root)
    assert written["/etc/udev/rules.d/65-apex.rules"] == 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"\n'
    assert (root / "etc/apt/keyrings/coral-edgetpu.gpg").read_bytes() == key.read_bytes()
    assert (
        "signed-by=/etc/apt/keyrings/coral-edgetpu.gpg]"
        in written["/etc/apt/sources.list.d/coral-edgetpu.list"]
    )
    assert (
        log(fakes)[-1]
        == f"chroot {root} apt-get install -y libedgetpu1-std gasket-dkms DEBIAN_FRONTEND=noninteractive"
    )
    assert not any(line.startswith("curl") for line in log(fakes))  # --key: nothing downloaded


def test_max_warns_and_lets_apt_ask(root: Path, fakes: dict[str, str]) -> None:
    done = setup(fakes, "--root", str(root), "--max")
    assert done.returncode == 0, done.stderr
    assert "WARNING: libedgetpu1-max runs the USB Accelerator at its maximum clock" in done.stderr
    assert log(fakes)[-1] == f"chroot {root} apt-get install -y libedgetpu1-max DEBIAN_FRONTEND=unset"


def test_running_it_again_gives_the_same_files(root: Path, fakes: dict[str, str]) -> None:
    assert setup(fakes, "--root", str(root), "--usb", "--pcie").returncode == 0
    first = files(root)
    assert setup(fakes, "--root", str(root), "--usb", "--pcie").returncode == 0
    assert files(root) == first


def test_list_names_what_it_writes_and_writes_nothing(root: Path, fakes: dict[str, str]) -> None:
    done = setup(fakes, "--list", "--pcie", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "/etc/apt/sources.list.d/coral-edgetpu.list",
        "/etc/apt/keyrings/coral-edgetpu.asc|.gpg",
        "/etc/udev/rules.d/65-apex.rules",
    ]
    assert files(root) == {}


def test_bad_input_is_one_line_and_exit_2(root: Path, fakes: dict[str, str]) -> None:
    done = setup(fakes, "--pcei")
    assert (done.returncode, done.stderr) == (2, "coral-setup: unknown option '--pcei' (see --help)\n")
    done = setup(fakes, "--root", str(root), "--key", str(root / "nope.gpg"))
    assert (done.returncode, done.stderr) == (2, f"coral-setup: --key {root}/nope.gpg: no such file\n")


def test_a_failed_key_download_says_what_network_it_needs(root: Path, fakes: dict[str, str]) -> None:
    (Path(fakes["PATH"].split(":")[0]) / "curl").write_text("#!/bin/sh\nexit 6\n")
    done = setup(fakes, "--root", str(root))
    assert done.returncode == 2
    assert "could not download Coral's key" in done.stderr
    assert "network to packages.cloud.google.com needed; or give --key FILE" in done.stderr
    assert files(root) == {}


def sysusers_root(tmp_path: Path, groups: str) -> Path:
    """A root with a base passwd/group and the sysusers file where tools/install puts it."""
    root = tmp_path / "sysroot"
    (root / "etc/sysusers.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text(groups)
    (root / "etc/sysusers.d/emotion-agent.conf").write_text(SYSUSERS.read_text())
    subprocess.run(["systemd-sysusers", "--root", str(root)], check=True, capture_output=True)
    return root


def members(root: Path) -> dict[str, list[str]]:
    out = {}
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, users = line.split(":")
        out[name] = users.split(",") if users else []
    return out


def test_systemd_sysusers_puts_the_service_user_in_plugdev_and_apex(tmp_path: Path) -> None:
    """On Raspberry Pi OS plugdev exists and apex does not (Coral's docs create it by hand):
    sysusers adds the user to plugdev and creates apex with the user in it."""
    root = sysusers_root(tmp_path, "root:x:0:\nvideo:x:44:\nplugdev:x:46:\n")
    groups = members(root)
    assert groups["plugdev"] == ["emotion-agent"]
    assert groups["apex"] == ["emotion-agent"]
    assert groups["video"] == ["emotion-agent"]
    assert "emotion-agent:x:" in (root / "etc/passwd").read_text()
    # User= brings these memberships at start; SupplementaryGroups= naming a missing group (apex
    # before sysusers ran) would stop the unit from starting (216/GROUP), so it names only video.
    named = [
        g
        for line in UNIT.read_text().splitlines()
        if line.startswith("SupplementaryGroups=")
        for g in line.split("=", 1)[1].split()
    ]
    assert named == ["video"]


def fake_image(tmp_path: Path) -> Path:
    """An overlay image with the agent's sysusers file and fake apt-get, curl, udevadm, systemctl
    and sudo (runs its command) in /usr/local/fakebin, each logging to /var/log/fake.log."""
    image = tmp_path / "image"
    (image / "etc/sysusers.d").mkdir(parents=True)
    (image / "etc/udev/rules.d").mkdir(parents=True)  # udev's own, on any Pi
    (image / "etc/sysusers.d/emotion-agent.conf").write_text(SYSUSERS.read_text())
    fakebin = image / "usr/local/fakebin"
    fakebin.mkdir(parents=True)
    fake = '#!/bin/sh\necho "$(basename "$0") $*" >> /var/log/fake.log\n'
    for name in ("apt-get", "udevadm", "systemctl"):
        (fakebin / name).write_text(fake)
    (fakebin / "curl").write_text(fake + FAKE_CURL.split("\n", 2)[2])
    (fakebin / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in fakebin.iterdir():
        tool.chmod(0o755)
    return image


def test_the_by_hand_commands_of_docs_coral_md_give_what_the_script_gives(
    tmp_path: Path, fakes: dict[str, str]
) -> None:
    """docs/coral.md's manual commands, run in order in an overlay of this machine (fake apt and
    curl, sudo runs its command): the same repository line, key and apex rule as the script,
    and the user in plugdev and apex. The Pi 5 snippet names the same rule."""
    box = OverlayRoot(tmp_path / "machine", image=fake_image(tmp_path))
    done = box.run(
        "set -e\n" + by_hand_block() + "id -nG emotion-agent\n",
        {
            "PATH": "/usr/local/fakebin:/usr/sbin:/usr/bin:/sbin:/bin",
            "FAKE_KEY": ARMORED,
            "FAKE_LOG": "/var/log/fake.log",
        },
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.splitlines()[-1].split()) >= {"plugdev", "apex"}
    assert box.path("/var/log/fake.log").read_text().splitlines() == [
        "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg",
        "apt-get update",
        "apt-get install -y libedgetpu1-std",
        "apt-get install -y gasket-dkms",
        "udevadm control --reload-rules",
        "udevadm trigger",
    ]
    script_root = tmp_path / "script"
    script_root.mkdir()
    assert setup(fakes, "--root", str(script_root), "--pcie").returncode == 0
    for path, text in files(script_root).items():
        assert box.path(path).read_text() == text, path
    assert APEX_RULE.strip() in (ROOT / "firmware_config/config-coral-pi5.txt").read_text()


def test_live_setup_on_a_copy_of_this_machine_puts_the_installed_user_in_plugdev_and_apex(
    tmp_path: Path,
) -> None:
    """Run as on a Pi (no --root) inside an overlay of this machine (tests/deploy/overlay.py), with
    the sysusers file tools/install lays down: the real systemd-sysusers makes the user and the
    groups; apt-get, curl, udevadm and systemctl are fakes that log their arguments (and succeed,
    so the agent counts as running)."""
    image = fake_image(tmp_path)
    box = OverlayRoot(tmp_path / "machine", image=image)
    done = box.run(
        f"PATH=/usr/local/fakebin:$PATH {SETUP} --usb --pcie && id -nG emotion-agent",
        {"FAKE_LOG": "/var/log/fake.log", "FAKE_KEY": ARMORED},
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.splitlines()[-1].split()) >= {"emotion-agent", "video", "plugdev", "apex"}
    assert (
        box.path("/etc/udev/rules.d/65-apex.rules").read_text()
        == 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"\n'
    )
    assert box.path("/etc/apt/keyrings/coral-edgetpu.asc").read_text() == ARMORED
    calls = [
        line for line in box.path("/var/log/fake.log").read_text().splitlines() if not line.startswith("curl")
    ]
    assert calls == [
        "apt-get update",
        "apt-get install -y libedgetpu1-std gasket-dkms",
        "udevadm control --reload-rules",
        "udevadm trigger",
        "systemctl is-active --quiet emotion-agent.service",
        "systemctl restart emotion-agent.service",  # the fake says it runs: restarted to take the groups
    ]
