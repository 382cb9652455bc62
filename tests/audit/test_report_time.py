"""`audit report` on logs whose timestamps span decades or lie beyond year 9999.

A Raspberry Pi has no real-time clock: until NTP answers, entries carry 1970 timestamps (the
audit verifier counts such steps and accepts them). A tampered entry's ts can be anything up to
2**53 - 1. The report must still be one readable page; the hourly plots drew one bar per hour
from the first to the last entry (470,000 bars, a 200 MB page, 1.3 GB of memory for a 1970
entry; memory exhausted for 2**53 - 1), and a ts beyond year 9999 raised a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.cli import main
from agent.clock import FakeClock
from agent.crypto import public_jwk

from .conftest import OpenLog
from .helpers import ORIGIN, frames, start, window

BEYOND_9999_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z


def _report(tmp_path: Path, key: Ed25519PrivateKey) -> tuple[int, str]:
    (tmp_path / "k.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    out = tmp_path / "r.html"
    args = ["audit", "report", str(tmp_path / "audit"), "--pubkey", str(tmp_path / "k.jwk")]
    code = main([*args, "-o", str(out)])
    return code, out.read_text(encoding="utf-8") if out.exists() else ""


@pytest.fixture
def pi_clock() -> FakeClock:
    return FakeClock(120.0)  # 1970-01-01T00:02:00Z: a Pi before NTP


def test_a_log_started_before_ntp_gives_a_small_report(
    tmp_path: Path, key: Ed25519PrivateKey, pi_clock: FakeClock
) -> None:
    log = AuditLog.open(tmp_path / "audit", key, ORIGIN, pi_clock, AuditConfig(), retention_days=365)
    log.append("start", start())
    pi_clock.advance(60)
    log.append("frames", frames(window_start_ms=60_000))
    log.append("window", window(window_start_ms=60_000))
    pi_clock.advance(1_700_000_000)  # NTP answers
    for _ in range(3):
        pi_clock.advance(3600)
        log.append("frames", frames())
        log.append("window", window())
    log.close()
    code, page = _report(tmp_path, key)
    assert code == 0
    assert "VERIFIED" in page
    assert len(page) < 500_000, f"{len(page)} characters"
    assert page.count("<rect") < 100
    assert "without entries" in page  # the long run of empty hours is one bar, and says so


def test_a_tampered_ts_beyond_year_9999_is_reported_not_a_traceback(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock, open_log: OpenLog
) -> None:
    log = open_log()
    log.append("start", start())
    clock.advance(60)
    log.append("frames", frames())
    log.append("stop", {"reason": "shutdown", "uptime_ms": 60_000})
    log.close()
    segment = tmp_path / "audit/segment-000000000000.jsonl"
    text = segment.read_text()
    for kind in ("frames", "stop"):
        text = re.sub(rf'("kind":"{kind}","salt":"[0-9a-f]{{32}}","ts":)\d+', rf"\g<1>{BEYOND_9999_MS}", text)
    segment.write_text(text)
    code, page = _report(tmp_path, key)
    assert code == 1
    assert "VERIFICATION FAILED" in page
    assert str(BEYOND_9999_MS) in page  # the stop entry's time, as it is written
    assert len(page) < 500_000, f"{len(page)} characters"


def test_a_tampered_ts_of_2_53_does_not_exhaust_memory(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock, open_log: OpenLog
) -> None:
    log = open_log()
    log.append("start", start())
    clock.advance(60)
    log.append("frames", frames())
    clock.advance(60)
    log.append("frames", frames())
    log.close()
    segment = tmp_path / "audit/segment-000000000000.jsonl"
    segment.write_text(re.sub(
        r'("kind":"frames","salt":"[0-9a-f]{32}","ts":)1700000120000', rf"\g<1>{2**53 - 1}",
        segment.read_text(),
    ))
    code, page = _report(tmp_path, key)
    assert code == 1
    assert "VERIFICATION FAILED" in page
    assert len(page) < 500_000, f"{len(page)} characters"
