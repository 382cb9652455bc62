"""Audit fixtures: a device key and a log factory with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.clock import FakeClock

from .helpers import ORIGIN


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


OpenLog = Callable[..., AuditLog]


@pytest.fixture
def open_log(tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock) -> OpenLog:
    """Open (or reopen) the log in tmp_path/audit with small checkpoint and segment sizes."""

    def _open(**settings: Any) -> AuditLog:
        retention = settings.pop("retention_days", 365)
        cfg = {"checkpoint_every_entries": 10, "segment_max_entries": 10} | settings
        return AuditLog.open(
            tmp_path / "audit", key, ORIGIN, clock, AuditConfig(**cfg), retention_days=retention
        )

    return _open
