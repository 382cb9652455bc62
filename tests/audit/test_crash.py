"""kill -9 at random points of appends: the log verifies up to its last complete entry, the
partial line (if any) is reported, and reopening continues the same tree."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.verify import verify_log
from agent.clock import FakeClock, SystemClock

from .conftest import OpenLog
from .helpers import ORIGIN, fill

WRITER = r"""
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from agent.audit import AuditLog, AuditConfig
from agent.clock import FakeClock, SystemClock

key = serialization.load_pem_private_key(Path(sys.argv[2]).read_bytes(), None)
log = AuditLog.open(sys.argv[1], key, sys.argv[3], SystemClock(),
                    AuditConfig(checkpoint_every_entries=7, segment_max_entries=25))
print("ready", flush=True)
i = 0
while True:
    log.append("publish", {"topic": "emotion-agent/lobby-1/stats", "seq": i, "payload_sha256": "ab" * 32})
    log.append("error", {"code": "filler", "message": "x" * (i % 400)})
    i += 1
"""


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "device.key"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    rng = random.Random(9)  # noqa: S311 -- kill timing, not cryptography
    audit = tmp_path / "audit"
    sizes = []
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(audit), str(pem), ORIGIN], stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.05, 0.4))
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        result = verify_log(audit, key.public_key())
        assert result.problems == []
        lines = sum(len(p.read_bytes().split(b"\n")) - 1 for p in audit.glob("segment-*.jsonl"))
        assert result.size == lines
        if result.partial is not None:
            assert "partial last entry" in result.partial
        sizes.append(result.size)
    assert sizes == sorted(sizes)
    assert sizes[-1] > sizes[0]
    log = AuditLog.open(audit, key, ORIGIN, SystemClock(), AuditConfig(checkpoint_every_entries=7))
    log.append("stop", {"reason": "shutdown", "uptime_ms": 1})
    log.close()
    final = verify_log(audit, key.public_key())
    assert final.problems == []
    assert final.partial is None
    assert final.warnings == []


def test_a_write_cut_at_every_byte_of_the_last_entry_verifies_and_recovers(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Every prefix of the last line is a possible state after kill -9 mid-write."""
    log = open_log(segment_max_entries=1000, checkpoint_every_entries=1000)
    fill(log, clock, 2)
    log.close()
    (tmp_path / "audit/checkpoints.log").write_bytes(b"")  # killed: no checkpoint ever signed (the
    # log creates the file empty with its first segment, so a crash leaves it empty, not absent)
    seg = tmp_path / "audit/segment-000000000000.jsonl"
    data = seg.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start + 1, len(data) - 1, 7):
        seg.write_bytes(data[:cut])
        result = verify_log(tmp_path / "audit", key.public_key())
        assert result.problems == [], cut
        assert result.size == data.count(b"\n") - 1
        assert result.partial is not None
        assert f"partial last entry ({cut - last_start} bytes" in result.partial
    reopened = open_log(segment_max_entries=1000)
    reopened.close()
    final = verify_log(tmp_path / "audit", key.public_key())
    assert final.problems == []
    assert final.partial is None


def test_a_checkpoint_cut_short_is_reported_and_dropped_on_reopen(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(segment_max_entries=1000, checkpoint_every_entries=5)
    fill(log, clock, 2)
    log.close()
    cps = tmp_path / "audit/checkpoints.log"
    data = cps.read_bytes()
    cps.write_bytes(data[:-30])
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems == []
    assert any("bytes after the last checkpoint (cut short by a crash)" in w for w in result.warnings)
    assert any("are not yet covered by a signed checkpoint" in w for w in result.warnings)
    open_log(segment_max_entries=1000).close()
    again = verify_log(tmp_path / "audit", key.public_key())
    assert again.problems == []
    assert again.warnings == []


def test_every_prefix_of_the_last_checkpoint_counts_as_cut_short_by_a_crash(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A crash leaves a prefix of the note being written: never a failure, only a warning."""
    log = open_log(segment_max_entries=1000, checkpoint_every_entries=5)
    fill(log, clock, 2)
    log.close()
    cps = tmp_path / "audit/checkpoints.log"
    data = cps.read_bytes()
    last = data.rfind(ORIGIN.encode() + b"\n")  # the last note's origin line
    assert last > 0
    for cut in range(last + 1, len(data)):
        cps.write_bytes(data[:cut])
        result = verify_log(tmp_path / "audit", key.public_key())
        assert result.problems == [], (cut - last, result.problems)
