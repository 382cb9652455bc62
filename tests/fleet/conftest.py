from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.fleet.store import Store
from tests.fleet.servers import Postgres

_dbs = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's tmp folder: that one is 0700 root, and PostgreSQL runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="emotion-agent-pg-"))
    server = Postgres(folder).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create(f"fleet{next(_dbs)}")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()
