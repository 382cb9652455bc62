"""Property: flipping any one byte of any segment or of checkpoints.log makes verify fail."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.audit import AuditConfig, AuditLog
from agent.audit.verify import verify_log
from agent.clock import FakeClock

from .helpers import ORIGIN, fill

KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz") / "audit"
    clock = FakeClock()
    log = AuditLog.open(
        d, KEY, ORIGIN, clock, AuditConfig(checkpoint_every_entries=4, segment_max_entries=12)
    )
    fill(log, clock, 6)
    log.close()
    assert verify_log(d, KEY.public_key()).ok
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(min_value=0), where=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_flipped_byte_fails_verification(
    pristine: Path, tmp_path: Path, which: int, where: int, flip: int
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path)) / "audit"  # hypothesis may replay an example
    shutil.copytree(pristine, work)
    files = sorted(p for p in work.iterdir() if p.name != "state.json")
    target = files[which % len(files)]
    data = bytearray(target.read_bytes())
    data[where % len(data)] ^= flip
    target.write_bytes(bytes(data))
    result = verify_log(work, KEY.public_key())
    assert not result.ok, (target.name, where % len(data), flip)
    shutil.rmtree(work.parent)


@pytest.mark.slow
def test_every_single_byte_flip_of_a_small_log_fails_verification(tmp_path: Path) -> None:
    """Exhaustive: each byte of each segment and of checkpoints.log, XOR 0x01 and XOR 0x80."""
    audit = tmp_path / "audit"
    clock = FakeClock()
    log = AuditLog.open(
        audit, KEY, ORIGIN, clock, AuditConfig(checkpoint_every_entries=3, segment_max_entries=10)
    )
    fill(log, clock, 3)
    log.close()
    undetected = []
    for target in sorted(p for p in audit.iterdir() if p.name != "state.json"):
        original = target.read_bytes()
        for pos in range(len(original)):
            for flip in (0x01, 0x80):
                data = bytearray(original)
                data[pos] ^= flip
                target.write_bytes(bytes(data))
                if verify_log(audit, KEY.public_key()).ok:
                    undetected.append((target.name, pos, flip))
        target.write_bytes(original)
    assert verify_log(audit, KEY.public_key()).ok
    assert undetected == []
