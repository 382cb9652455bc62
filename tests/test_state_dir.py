"""state_dir: refused by name (system folders), then made the service user's own at start."""

from __future__ import annotations

import os
import pwd
import re
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


def user_named(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    other = os.geteuid() + 1
    said = f"state_dir {folder}: belongs to {user_named(os.geteuid())}, not to {user_named(other)}"
    with pytest.raises(ConfigError, match=re.escape(said)):
        state_dir.prepare(folder, uid=other)


def test_the_refusal_of_another_users_folder_does_not_call_this_user_the_service_user(tmp_path: Path) -> None:
    """`sudo emotion-agent check-config` on a device said 'belongs to uid 994, not to the service
    user (uid 0); run chown -R <service user>': root is not the service user, and a chown to root
    stops the service (exit 2, not restarted). The message says to run as the folder's owner."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    other = os.geteuid() + 1
    with pytest.raises(ConfigError) as info:
        state_dir.check(folder, uid=other)
    said = str(info.value)
    assert "service user (uid" not in said, said
    assert said.endswith(
        f"the user this command runs as; if the folder's owner is the service user (as systemd's "
        f"StateDirectory= makes it), run the command as that user (docs/installing.md, section 7), "
        f"else give it the folder: `chown -R <service user> {folder}`"
    ), said


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        state_dir.prepare(tmp_path / "state")


def test_a_nul_byte_in_the_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"state_dir '/var/lib/st\\x00ate': contains a NUL byte"):
        state_dir.prepare(Path("/var/lib/st\0ate"))
