"""A database ``collect`` cannot open is said naming ``database``, without a traceback: exit 2
for a path that is no database file or a malformed URL, exit 1 for one that may work later (a
server down, a read-only file). Each was a sqlite3 or psycopg traceback, exit 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import ConfigError, StorageError
from agent.fleet.store import Store
from tests.fleet.test_service_inbox import settings
from tests.fleet.test_state_dir import run_collect


@pytest.mark.parametrize(("make", "kind"), [(Path.mkdir, "a folder"), (os.mkfifo, "a FIFO (named pipe)")])
def test_a_database_path_that_is_no_file_is_a_config_error(tmp_path: Path, make: object, kind: str) -> None:
    path = tmp_path / "fleet.db"
    make(path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        Store(f"sqlite:///{path}")
    assert str(info.value) == f"database {path}: is {kind}, not a SQLite database file"


def test_a_file_sqlite_cannot_use_is_a_storage_error_naming_it() -> None:
    with pytest.raises(StorageError, match=r"database /proc/version: cannot (open|use) the SQLite database"):
        Store("sqlite:////proc/version")


def test_a_malformed_postgresql_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"database postgresql://\[::1: not a usable PostgreSQL URL"):
        Store("postgresql://[::1")


@pytest.mark.parametrize("url", ["postgresql://rx:hunter2@[::1/db", "postgresql://rx:hunter2%ZZ@127.0.0.1:1/db"])
def test_libpqs_words_about_a_malformed_url_do_not_carry_its_password(url: str) -> None:
    """libpq quotes the URI, or the token it could not decode, in its error."""
    with pytest.raises(ConfigError) as info:
        Store(url)
    said = str(info.value)
    assert said.startswith("database postgresql://rx:***@"), said
    assert "hunter2" not in said


def test_a_postgresql_server_that_is_not_there_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as info:
        Store("postgresql://rx:hunter2@127.0.0.1:1/fleet?connect_timeout=2")
    said = str(info.value)
    assert said.startswith("database postgresql://rx:***@127.0.0.1:1/fleet?connect_timeout=2: cannot connect")
    assert "hunter2" not in said


def test_collect_on_a_folder_as_its_database_exits_2_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    done = run_collect(tmp_path, settings(tmp_path), database=tmp_path / "devices")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"database {tmp_path / 'devices'}: is a folder, not a SQLite database file" in done.stderr
