"""The receiver's ``state_dir`` (its boot and sequence counters) is checked as the agent's: a
system folder is refused when the config loads, a file or another user's folder when it starts
(the error names the key; no traceback), and a folder open to others is closed to 0700. It was
``mkdir(exist_ok=True)`` and nothing more: a file there ended ``collect`` in a traceback, and the
counters that stop a replay of its signed rollups sat in a folder anyone could write."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.fleet.service import FleetService
from agent.fleet.settings import FleetSettings, load_fleet_settings
from tests.fleet.test_service_inbox import DyingInbox, settings


def test_a_state_dir_that_is_a_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    fleet = settings(tmp_path)
    fleet.state_dir.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"state_dir {fleet.state_dir}: is a file, not a folder"):
        FleetService(fleet, inbox=DyingInbox())


def test_a_state_dir_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = settings(tmp_path)
    fleet.state_dir.mkdir(mode=0o700)
    other = os.geteuid() + 1  # the receiver runs as another user than the folder's owner
    monkeypatch.setattr("agent.state_dir.os.geteuid", lambda: other)
    with pytest.raises(ConfigError, match=f"state_dir {fleet.state_dir}: belongs to .*uid {os.getuid()}"):
        FleetService(fleet, inbox=DyingInbox())


def test_a_state_dir_open_to_others_is_closed(tmp_path: Path) -> None:
    fleet = settings(tmp_path)
    fleet.state_dir.mkdir()
    os.chmod(fleet.state_dir, 0o777)  # noqa: S103 - the mistake under test
    FleetService(fleet, inbox=DyingInbox()).stop()
    assert stat.S_IMODE(fleet.state_dir.stat().st_mode) == 0o700


def test_a_system_folder_as_state_dir_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("receiver_id: r1\nsource: {kind: mqtt}\nprivate_key: /etc/r.key\nstate_dir: /var/lib\n")
    with pytest.raises(ConfigError) as info:
        load_fleet_settings(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"state_dir ({path}:4): /var/lib is a system folder"), problem


def run_collect(
    tmp_path: Path, fleet: FleetSettings, database: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``collect`` on ``fleet``'s state_dir and key, a NATS server nobody runs and ``database``
    (default: fleet.db in ``tmp_path``)."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"receiver_id: rx-1\nsource: {{kind: nats, servers: ['nats://127.0.0.1:1']}}\n"
        f"database: 'sqlite:///{database or tmp_path / 'fleet.db'}'\nstate_dir: {fleet.state_dir}\n"
        f"private_key: {fleet.private_key}\nhttp: {{port: 0}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "agent", "collect", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_collect_with_a_file_as_state_dir_exits_2_without_a_traceback(tmp_path: Path) -> None:
    fleet = settings(tmp_path)
    fleet.state_dir.write_text("not a folder")
    done = run_collect(tmp_path, fleet)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"state_dir {fleet.state_dir}: is a file, not a folder" in done.stderr
