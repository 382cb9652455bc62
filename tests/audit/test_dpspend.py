"""Deleting dp_budget.json buys nothing: the day's spend comes back from the audit log."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.analytics.dp import BudgetAccountant, DaySpend
from agent.audit import AuditConfig, AuditLog
from agent.audit.dpspend import logged_spend
from agent.clock import FakeClock

from .helpers import ORIGIN, policy, start, window

MIDNIGHT = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC


def a_day_of_windows(tmp_path: Path, clock: FakeClock) -> Path:
    """Yesterday one window spent 0.5; today a start with budget 1.0, then three windows of 0.25
    (one refused: 0), a reload that lowered the budget to 0.9, then one more window."""
    audit = tmp_path / "state" / "audit"
    key = Ed25519PrivateKey.generate()
    log = AuditLog.open(audit, key, ORIGIN, clock, AuditConfig(segment_max_entries=10))
    dp = policy(dp_epsilon_milli=250, dp_daily_budget_milli=1000)
    log.append("start", start(policy=dp))
    log.append("window", window(window_start_ms=int((MIDNIGHT - 120) * 1000), dp_spent_micro=500_000))
    clock.advance(120)  # past midnight: a new segment
    for i, spent in enumerate((250_000, 250_000, 0)):
        clock.advance(60)
        log.append("window", window(window_start_ms=int((MIDNIGHT + 60 * i) * 1000), dp_spent_micro=spent))
    log.append("policy_change", {"policy": dp | {"dp_daily_budget_milli": 900}, "reason": "reload"})
    clock.advance(60)
    log.append("window", window(window_start_ms=int((MIDNIGHT + 240) * 1000), dp_spent_micro=250_000))
    log.close()
    return tmp_path / "state"


def test_the_days_spend_and_lowest_budget_are_read_back(tmp_path: Path) -> None:
    clock = FakeClock(start=MIDNIGHT - 60)
    state = a_day_of_windows(tmp_path, clock)
    assert logged_spend(state / "audit", "2023-11-15") == (750_000, 900_000)
    assert logged_spend(state / "audit", "2023-11-14") == (500_000, 1_000_000)
    assert logged_spend(state / "audit", "2023-11-16") == (0, None)


def test_deleting_the_budget_file_does_not_reset_the_days_spend(tmp_path: Path) -> None:
    clock = FakeClock(start=MIDNIGHT - 60)
    state = a_day_of_windows(tmp_path, clock)
    (state / BudgetAccountant.FILE_NAME).unlink(missing_ok=True)  # the file is gone

    def history(day: str) -> DaySpend:
        return DaySpend(*logged_spend(state / "audit", day))

    acct = BudgetAccountant(state, 1.0, history=history)
    assert acct.remaining_micro(MIDNIGHT + 400) == 150_000  # min(1.0, 0.9) - 0.75
    assert acct.try_spend(0.25, MIDNIGHT + 400) is False
    assert BudgetAccountant(state, 1.0).remaining_micro(MIDNIGHT + 400) == 150_000
