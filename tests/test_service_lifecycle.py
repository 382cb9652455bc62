"""The service as systemd runs it: what makes it exit 2 (not restarted) and what 1 (restarted),
and what a reload accepts, judged against what the next start would do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_service import write_config

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          check=False, timeout=120, env=CHECKOUT)


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_an_output_file_the_service_cannot_write_is_a_config_error_before_the_start(
    tmp_path: Path, where: str
) -> None:
    """Was: `run` got as far as starting the outputs, then stopped on a bare OSError
    (`[Errno 2] No such file or directory: '/var/log/…'`, exit 1), so systemd restarted it in
    vain until its start limit, and `check-config` called the same config valid. Under the unit
    (ProtectSystem=strict) every path outside the state folder fails this way (EROFS)."""
    target = tmp_path / "no-such-folder" / "out.jsonl" if where == "missing folder" else tmp_path
    path = write_config(tmp_path, str(tmp_path / "clip.mp4"))
    path.write_text(path.read_text().replace(f'jsonl: "{tmp_path / "out.jsonl"}"', f'jsonl: "{target}"'))
    for command in ("run", "check-config"):
        done = cli(command, "-c", str(path))
        assert done.returncode == 2, (command, done.stderr)
        assert f"emotion-agent: error: outputs.jsonl {target}: " in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists(), "refused before anything was started or written"


def test_an_output_file_on_a_read_only_mount_says_what_the_sandbox_allows(tmp_path: Path) -> None:
    """The unit's ProtectSystem=strict, reproduced with a read-only bind mount in a private mount
    namespace: check-config names the key and says where the service may write."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_config(tmp_path, str(tmp_path / "clip.mp4"))
    target = folder / "out.jsonl"
    path.write_text(path.read_text().replace(str(tmp_path / "out.jsonl"), str(target)))
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              f"exec {sys.executable} -m agent check-config -c {path}")
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                              check=False, timeout=120, env=CHECKOUT)
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if "mount" in done.stderr and "outputs.jsonl" not in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 2, done.stderr
    assert f"outputs.jsonl {target}: cannot be created: {folder} is on a read-only file system" in done.stderr
    assert "ReadWritePaths=" in done.stderr

