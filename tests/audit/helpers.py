"""Valid entry payloads and a realistic run, shared by the audit tests."""

from __future__ import annotations

from typing import Any

from agent.audit import AuditLog
from agent.clock import FakeClock

ORIGIN = "emotion-agent/lobby-1/audit"
HASH = "ab" * 32


def frames(**over: Any) -> dict[str, Any]:
    base = {
        "window_start_ms": 1_700_000_000_000,
        "window_ms": 60_000,
        "captured": 300,
        "analysed": 290,
        "dropped": 6,
        "discarded": 4,
        "lifetime_max_ms": 180,
        "lifetime_p99_ms": 120,
        "queued": 0,
        "state_files_scanned": 4,
        "state_image_files": 0,
    }
    return base | over


def window(**over: Any) -> dict[str, Any]:
    base = {
        "window_start_ms": 1_700_000_000_000,
        "window_ms": 60_000,
        "people": 7,
        "published": True,
        "suppressed": None,
        "k": 5,
        "dp_spent_micro": None,
    }
    return base | over


def policy(**over: Any) -> dict[str, Any]:
    base = {
        "min_people": 5,
        "window_seconds": 60,
        "audit_days": 365,
        "max_frame_lifetime_ms": 1000,
        "jurisdiction": "EU",
        "context": "retail",
        "purpose": "analytics",
        "dp_epsilon_milli": None,
        "dp_daily_budget_milli": None,
    }
    return base | over


def start(**over: Any) -> dict[str, Any]:
    base = {
        "device_id": "lobby-1",
        "software_version": "0.1.0",
        "model_hashes": {"blazeface": HASH, "emotion": "cd" * 32},
        "config_hash": "ef" * 32,
        "policy": policy(),
        "boot": 3,
    }
    return base | over


def fill(log: AuditLog, clock: FakeClock, n: int) -> None:
    """A realistic run: start, then frames + window + publish per minute."""
    log.append("start", start())
    for i in range(n):
        clock.advance(60)
        log.append("frames", frames())
        log.append("window", window(people=5 + i % 3))
        log.append("publish", {"topic": "emotion-agent/lobby-1/stats", "seq": i, "payload_sha256": HASH})
