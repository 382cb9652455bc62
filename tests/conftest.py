"""Shared fixtures: pinned real media, a fake clock."""

from __future__ import annotations

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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
