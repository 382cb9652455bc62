"""Logs written before the measured frames fields still verify, and say what they cannot show.

``legacy/audit`` was written by the previous version (``tests/audit/helpers.fill`` at commit
f6ad03d, with a fixed key): its ``frames`` entries carry the constant ``pixel_bytes_persisted``
and its policies no ``dp_daily_budget_milli``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.errors import PayloadError

from .helpers import ORIGIN, frames

LEGACY = Path(__file__).parent / "legacy"
SEED = bytes(range(32))


def public_key() -> Ed25519PublicKey:
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex((LEGACY / "public.key").read_text()))
    assert key == Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    return key


def test_an_old_log_verifies_with_a_warning_that_its_pixel_figure_was_a_constant() -> None:
    result = verify_log(LEGACY / "audit", public_key())
    assert result.problems == []
    assert result.warnings == [
        "5 frames entries in the old form (pixel_bytes_persisted, a constant the device did not "
        "measure; discarded computed as a remainder): they show the frame counts, not that no "
        "image reached state_dir",
        "state.json is unsigned (written by a version before states were signed): it cannot show "
        "that no entries were cut off the end of the log",
    ]


def test_the_new_version_appends_to_an_old_log_and_the_whole_verifies(tmp_path: Path) -> None:
    shutil.copytree(LEGACY / "audit", tmp_path / "audit")
    clock = FakeClock(start=1_700_000_000.0 + 3600)
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    log = AuditLog.open(tmp_path / "audit", key, ORIGIN, clock, AuditConfig(segment_max_entries=10))
    log.append("frames", frames())
    log.close()
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems == []


def test_writing_the_old_field_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog.open(tmp_path / "audit", key, ORIGIN, FakeClock(), AuditConfig())
    with pytest.raises(PayloadError, match="'pixel_bytes_persisted' is a legacy field"):
        log.append("frames", frames(pixel_bytes_persisted=0))
    log.close()
