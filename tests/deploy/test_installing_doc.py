"""docs/installing.md, run as written: every `sh` block, in order, in one shell.

The laptop, the broker host and the Pi are one throw-away copy of this machine (tests/deploy/
overlay.py: an overlay over / entered with chroot, as root). What the test puts in place of
what it cannot have, all here and named in the doc's "How this page is tested":

- ``sudo`` runs the command; ``systemctl``/``journalctl`` are tests/deploy/fake_systemd.py,
  which starts each unit's real ExecStart= line as its User= with its LoadCredential=;
- the placeholder ``/dev/sdX`` (the card) is a FAT image holding a Raspberry Pi config.txt;
- ``broker.example.internal`` resolves to 127.0.0.1 (an /etc/hosts line);
- ``aarch64`` in the wheel download is ``x86_64``, this machine's (the doc's own aarch64
  command is resolved against PyPI by test_the_wheelhouse_command_resolves_for_a_pi);
- a block marked ``<!-- not run here: REASON -->`` is replaced by the stand-in below for its
  reason (moving the card into the Pi, copying files between the three machines).

The shell stops at the first failing command; the run ends with the agent's first signed
message verified by the doc's own `emotion-agent verify` command.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.overlay import OverlayRoot

PROJECT = Path(__file__).resolve().parents[2]
DOC = PROJECT / "docs" / "installing.md"
FAKE_BIN = "/opt/fake-bin"
CARD = "/root/card.img"
VERIFIED = "verify: 1 message(s): 1 ok, 0 rejected, 0 malformed; 0 gap(s), 0 missing"

pytestmark = pytest.mark.slow

# What the test does in place of each block the doc marks as not run here (key: its reason).
STAND_INS = {
    "the test runs in the checkout it tests": f"ln -sfn {PROJECT} ~/emotion-agent",
    "the test's broker host is the laptop itself, the files are already there": "",
    "needs an SD card and Raspberry Pi Imager; the test makes a FAT image holding config.txt": (
        f"mkfs.vfat -C {CARD} 8192 >/dev/null && printf 'arm_64bit=1\\n' > /tmp/config.txt && "
        f"MTOOLS_SKIP_CHECK=1 mcopy -i {CARD} /tmp/config.txt ::/config.txt"
    ),
    "needs the Pi on the network; the test copies the card image's files to /boot/firmware and "
    "keys/lobby-1.crt to ~/ (~/wheels is already there)": (
        f"mkdir -p /boot/firmware && MTOOLS_SKIP_CHECK=1 mcopy -s -n -i {CARD} '::/*' /boot/firmware/ && "
        "cp ~/site/keys/lobby-1.crt ~/"
    ),
    "python3-picamera2 exists only in Raspberry Pi OS; the test's Pi is the laptop, "
    "which already has the checkout": "",
    "needs the card's root partition mounted; tests/deploy/test_install_paths.py::"
    "test_a_golden_image_builds_its_venv_at_first_boot_and_the_service_starts runs this path": "",
    "needs a camera": "",
}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run here: (.+?) -->\n$")


@dataclass(frozen=True)
class Block:
    line: int
    body: str
    not_run: str | None  # the reason, when the doc marks the block as not run here


def shell_blocks(text: str) -> list[Block]:
    """The doc's `sh` blocks in order; other fences must be config (ini/yaml), never commands."""
    out = []
    for m in FENCE.finditer(text):
        lang, body = m.group(1), m.group(2)
        assert lang in ("sh", "ini", "yaml"), f"docs/installing.md: a ``` block of kind {lang!r}"
        if lang != "sh":
            continue
        mark = NOT_RUN.search(text[: m.start()][-400:])
        out.append(Block(text.count("\n", 0, m.start()) + 1, body, mark.group(1) if mark else None))
    return out


def script(blocks: list[Block]) -> str:
    """One bash script: each block as written (placeholders replaced), or its stand-in."""
    parts = [
        "set -eo pipefail",
        "PS4='+ $(date +%T) '; set -x",
        "trap 'for p in /run/fake-systemd/*.pid; do [ -f \"$p\" ] && kill -- -$(cat \"$p\") 2>/dev/null; "
        "done; true' EXIT",
        "cd ~",
    ]
    for block in blocks:
        parts.append(f"echo '### docs/installing.md line {block.line}' >&2")
        if block.not_run is not None:
            parts.append(STAND_INS[block.not_run] or ":")
        else:
            parts.append(block.body.replace("/dev/sdX", CARD).replace("aarch64", "x86_64"))
    parts.append("echo '### done' >&2")
    return "\n".join(parts) + "\n"


def fake_root(base: Path) -> Path:
    """The files laid over the machine before the first command: the stand-ins, /etc/hosts."""
    image = base / "image"
    bin_dir = image / FAKE_BIN.lstrip("/")
    bin_dir.mkdir(parents=True)
    fake = PROJECT / "tests" / "deploy" / "fake_systemd.py"
    for name in ("systemctl", "journalctl"):
        shutil.copy(fake, bin_dir / name)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "sudo").write_text('#!/bin/sh\n# the test runs as root: sudo runs the command\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    (image / "etc").mkdir()
    hosts = Path("/etc/hosts").read_text()
    (image / "etc" / "hosts").write_text(hosts + "\n127.0.0.1 broker.example.internal\n")
    return image


def test_every_not_run_block_says_why_and_the_test_knows_its_stand_in() -> None:
    blocks = shell_blocks(DOC.read_text())
    skipped = [b for b in blocks if b.not_run is not None]
    assert {b.not_run for b in skipped} == set(STAND_INS)
    assert len(skipped) <= len(blocks) // 2
    golden = PROJECT / "tests/deploy/test_install_paths.py"
    name = "test_a_golden_image_builds_its_venv_at_first_boot_and_the_service_starts"
    assert f"def {name}(" in golden.read_text()


def test_the_installing_doc_runs_in_order_up_to_a_verified_first_signed_message(tmp_path: Path) -> None:
    blocks = shell_blocks(DOC.read_text())
    box = OverlayRoot(tmp_path / "machine", image=fake_root(tmp_path))
    env = {"PATH": f"{FAKE_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "USER": "root"}
    ran = box.run(f"exec bash -c {shlex.quote(script(blocks))}", env)
    output = ran.stdout + ran.stderr
    last = re.findall(r"^### (.*)$", ran.stderr, re.M)
    assert ran.returncode == 0, f"stopped after {last[-1] if last else 'nothing'}:\n{output[-6000:]}"
    assert last[-1] == "done"
    # The check step's journal lines and the verification of the first signed message.
    assert "emotion-agent-import: bundle imported and removed from /boot/firmware" in ran.stdout
    assert '"msg": "agent started", "device": "lobby-1"' in ran.stdout
    assert VERIFIED in ran.stderr, output[-4000:]
    assert VERIFIED in DOC.read_text()  # the doc shows the line the installer will see
    first = box.path("/root/site/lobby-1-first.jsonl").read_text()
    assert '"topic":"emotion-agent/lobby-1/key"' in first.replace(" ", "")
    # Upgrade kept the previous venv, uninstall --purge left nothing behind.
    assert "rolled back to the previous venv" in ran.stdout
    assert box.run("test -e /etc/emotion-agent || test -e /opt/emotion-agent").returncode == 1


def test_the_wheelhouse_command_resolves_for_a_pi(tmp_path: Path, wheel: Path) -> None:
    """The doc's `pip download` as written (aarch64): every dependency has a Pi wheel, at the pins."""
    (block,) = [b for b in shell_blocks(DOC.read_text()) if "pip download" in b.body]
    (download,) = [c for c in block.body.replace("\\\n", " ").splitlines() if "pip download" in c]
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels")
    env = {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", download], cwd=PROJECT, env=env, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "wheels").iterdir())
    assert "numpy-1.26.4-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl" in names
    assert any(n.startswith("ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64") for n in names)
    assert any(n.startswith("opencv_python_headless-4.11.0.86-") and "aarch64" in n for n in names)
    assert not [n for n in names if "x86_64" in n]
