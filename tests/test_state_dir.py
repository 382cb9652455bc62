"""state_dir: refused by name (system folders), then made the service user's own at start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent import state_dir
from agent.errors import ConfigError


@pytest.mark.parametrize("path", ["/", "//", "/etc", "/var", "/var/lib", "/usr/../etc", "/tmp", "/proc/1/fd"])
def test_system_folders_are_refused_by_name(path: str) -> None:
    assert state_dir.path_problem(Path(path)) is not None


@pytest.mark.parametrize("path", ["/var/lib/emotion-agent", "/srv/agent/state", "/tmp/agent"])
def test_own_folders_are_accepted(path: str) -> None:
    assert state_dir.path_problem(Path(path)) is None


def test_a_missing_folder_is_created_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        made = state_dir.prepare(tmp_path / "a" / "state")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_an_open_folder_of_ours_is_set_to_0700(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    state_dir.prepare(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "had mode 0755; set to 0700" in caplog.text


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    other = os.geteuid() + 1
    said = rf"state_dir {folder}: belongs to uid {os.geteuid()}, not to the service user \(uid {other}\)"
    with pytest.raises(ConfigError, match=said):
        state_dir.prepare(folder, uid=other)


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        state_dir.prepare(tmp_path / "state")


def test_a_nul_byte_in_the_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"state_dir '/var/lib/st\\x00ate': contains a NUL byte"):
        state_dir.prepare(Path("/var/lib/st\0ate"))
