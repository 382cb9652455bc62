"""Shared fixtures: pinned real media, a fake clock."""

from __future__ import annotations

import subprocess
import sys
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
def clock() -> FakeClock:
    return FakeClock()
