"""Shared fixtures: pinned real media, a fake clock; each test leaves logging as it found it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / ".cache" / "media"


@pytest.fixture(scope="session")
def media() -> Path:
    """The pinned real images (tools/fetch_media.py); missing media is a failure, not a skip."""
    if not (MEDIA / "astronaut.png").exists():
        pytest.fail("test media missing: run `make media` (tools/fetch_media.py)")
    return MEDIA


@pytest.fixture(scope="session")
def sample_clip(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clip (tools/make_sample.py): 0-4 s empty, 5-10 s one person, 10-16 s six, then empty."""
    out = tmp_path_factory.mktemp("sample") / "lobby.mp4"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_sample.py"), "--out", str(out), "--media", str(media)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file's folder (tmp_path/etc), while the working folder is another one: relative
    paths in a config must be read from the file's folder (tests/test_config_paths.py)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "etc"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _keep_core_dump_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in this process (``main(["analyze", ...])``) would forbid core dumps for
    the rest of the session, for good (a hard limit of 0, not dumpable), and a later test's
    child could not raise the limit again: the guard only reads the state back here. The real
    one is checked in child processes (tests/privacy/test_coredump.py, tests/test_analyze.py)."""
    from agent.privacy import coredump  # noqa: PLC0415 - only for the patch

    monkeypatch.setattr(coredump, "forbid_core_dumps", lambda announce=True: coredump.core_dump_state())


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """`cli.main` installs a stderr handler on the root logger; pytest replaces stderr per test,
    so a handler left behind writes to a closed file in every later test (and a slow one changes
    their timing). Put back the root logger's handlers and level after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
