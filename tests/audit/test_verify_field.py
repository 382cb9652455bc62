"""Review findings: tampering `audit verify` accepts, hostile inputs it cannot handle, and a
false failure on an honest log. Each test fails on the code as reviewed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.entries import encode_entry
from agent.audit.note import parse_checkpoint_text, split_notes
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.crypto import public_jwk
from agent.errors import PayloadError
from agent.key_rotation import _open_log

from .conftest import OpenLog
from .helpers import fill, frames, policy, start, window

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def closed(open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """36 entries in 4 segments (0, 10, 20, 30), checkpoints every 5 and at close; public key."""
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    fill(log, clock, 10)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 600_000})
    log.close()
    (tmp_path / "device.pub.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    return tmp_path / "audit"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agent", "audit", "verify", *args],
        check=False, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO,
    )


def test_a_dropped_last_segment_with_its_checkpoints_fails_against_the_signed_state(
    closed: Path, key: Ed25519PrivateKey, tmp_path: Path, clock: FakeClock
) -> None:
    """state.json (signed by the device key) attests 36 entries; the device itself refuses the
    truncated folder, but `audit verify` ignores state.json and reports OK."""
    (closed / "segment-000000000030.jsonl").unlink()
    cps = closed / "checkpoints.log"
    notes, _ = split_notes(cps.read_bytes())
    kept = [n for _, n in notes if parse_checkpoint_text(n.decode().split("\n\n")[0] + "\n")[1] <= 30]
    cps.write_bytes(b"".join(kept))
    copy = tmp_path / "copy"
    shutil.copytree(closed, copy)
    with pytest.raises(PayloadError, match="truncated"):  # the device sees it
        AuditLog.open(copy, key, "emotion-agent/lobby-1/audit", clock, AuditConfig())
    result = verify_log(closed, key.public_key())
    assert result.problems, "a truncated log (36 entries attested, 30 left) verified OK"


def test_a_fifo_in_the_audit_folder_does_not_hang_verify(closed: Path) -> None:
    os.mkfifo(closed / "segment-000000000040.jsonl")
    try:
        r = _cli(str(closed), "--pubkey", str(closed.parent / "device.pub.jwk"), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("audit verify hung on a FIFO named like a segment (expected exit 2 naming the file)")
    assert r.returncode == 2


@pytest.mark.parametrize(
    "line",
    [
        '{"note": "\\ud800"}',  # a lone surrogate: UnicodeEncodeError
        '{"payload": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError in json.loads
    ],
    ids=["lone-surrogate", "deep-nesting"],
)
def test_a_hostile_external_checkpoints_file_is_exit_2_not_a_traceback(closed: Path, line: str) -> None:
    ext = closed.parent / "external.jsonl"
    ext.write_text(line + "\n")
    r = _cli(str(closed), "--pubkey", str(closed.parent / "device.pub.jwk"), "--checkpoints", str(ext))
    assert "Traceback" not in r.stderr, r.stderr[-300:]
    assert r.returncode == 2


def test_a_day_that_overspent_the_privacy_budget_fails(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """README: the log shows the device reported its rules kept "(k, lifetimes, retention,
    budget)"; the verifier checks k, lifetimes and retention but not the ε budget."""
    dp = policy(dp_epsilon_milli=500, dp_daily_budget_milli=1000)  # 0.5 per window, 1.0 per day
    log = open_log(checkpoint_every_entries=5, segment_max_entries=100)
    log.append("start", start(policy=dp))
    for i in range(6):  # 6 × 0.5 = 3.0 spent in one UTC day, budget 1.0
        clock.advance(60)
        log.append("window", window(window_start_ms=1_700_000_000_000 + i * 60_000, dp_spent_micro=500_000))
    log.close()
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems, "windows spent 3.0 ε in a day under a daily budget of 1.0: verified OK"


def test_a_frame_queued_across_a_purge_boundary_verifies(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """An honest log: a frame waits at every window close (queued = 1). After retention purges
    the segment with the `start`, the verifier restarts `queued before` at 0 and fails."""
    log = open_log(retention_days=365, checkpoint_every_entries=5, segment_max_entries=10)
    log.append("start", start())
    log.append("frames", frames(captured=301, queued=1))  # 301 + 0 = 290 + 6 + 4 + 1
    for _ in range(20):
        clock.advance(60)
        log.append("frames", frames(queued=1))  # 300 + 1 = 290 + 6 + 4 + 1
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []
    clock.advance(366 * 86_400)
    assert log.purge() is not None
    log.append("frames", frames(queued=1))
    log.close()
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.first_index > 0
    assert result.problems == []


def test_the_documented_checkpoint_origin_is_the_one_the_agent_signs(tmp_path: Path) -> None:
    """docs/audit-log.md: "Line 1, the origin, is `emotion-agent/<device_id>/audit`"; the agent
    (service.py, key_rotation.py) and the fleet witness use `emotion-agent/<device_id>`."""
    doc = (REPO / "docs/audit-log.md").read_text()
    template = re.search(r"Line 1, the origin, is `([^`]+)`", doc)
    assert template is not None
    cfg = SimpleNamespace(
        state_dir=tmp_path, device_id="lobby-1", audit=AuditConfig(),
        retention=SimpleNamespace(audit_days=365),
    )
    log = _open_log(cfg, FakeClock(), Ed25519PrivateKey.generate(), ())  # type: ignore[arg-type]
    log.close()
    signed_origin = (tmp_path / "audit/checkpoints.log").read_text().split("\n", 1)[0]
    assert signed_origin == template.group(1).replace("<device_id>", "lobby-1")


def test_a_segment_entry_whose_recorded_queue_is_not_the_last_frames_figure_fails(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    log.append("start", start())
    for _ in range(8):
        log.append("frames", frames())  # queued 0
    log._queued = 1  # what the next segment entry records
    log.append("frames", frames())
    log.close()
    problems = verify_log(tmp_path / "audit", key.public_key()).problems
    assert problems[0].startswith("segment-000000000010.jsonl line 1 (entry 10): its recorded queue (1 ")


def test_a_purged_log_written_before_the_recorded_queue_still_verifies(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer of the previous version (segment entries without `queued`): the first kept
    segment's queue starts at 0, as it did, and the log verifies as it did."""
    from agent.audit import log as log_module  # noqa: PLC0415

    def old_encode(index: int, ts_ms: int, kind: str, fields: dict[str, object], **kw: bool) -> object:
        if kind == "segment":
            fields = {k: v for k, v in fields.items() if k != "queued"}
        return encode_entry(index, ts_ms, kind, fields, **kw)

    monkeypatch.setattr(log_module, "encode_entry", old_encode)
    log = open_log(retention_days=365, checkpoint_every_entries=5, segment_max_entries=10)
    log.append("start", start())
    for _ in range(21):
        clock.advance(60)
        log.append("frames", frames())
    clock.advance(366 * 86_400)
    assert log.purge() is not None
    log.append("frames", frames())
    log.close()
    assert b'"queued":' not in (tmp_path / "audit/segment-000000000020.jsonl").read_bytes().split(b"\n")[0]
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.first_index > 0
    assert result.problems == []
