"""The differential-privacy budget, checked by `audit verify`: per UTC day of the windows'
start, the spend never exceeds the lowest daily budget in force at that day's spends."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditLog
from agent.audit.verify import verify_log
from agent.clock import FakeClock

from .conftest import OpenLog
from .helpers import policy, start, window

DAY0 = 1_699_920_000_000  # 2023-11-14T00:00:00Z
DP = policy(dp_epsilon_milli=500, dp_daily_budget_milli=1000)


def _spend(log: AuditLog, clock: FakeClock, at_ms: int, micro: int = 500_000) -> None:
    clock.advance(60)
    log.append("window", window(window_start_ms=at_ms, dp_spent_micro=micro))


def test_spending_exactly_the_budget_each_day_verifies(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=100)
    log.append("start", start(policy=DP))
    for day in range(3):
        _spend(log, clock, DAY0 + day * 86_400_000)
        _spend(log, clock, DAY0 + day * 86_400_000 + 3_600_000)
    log.append("window", window(window_start_ms=DAY0, dp_spent_micro=0))  # refused: nothing spent
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


def test_an_overspent_day_is_named_with_its_figures(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=100)
    log.append("start", start(policy=DP))
    for i in range(4):
        _spend(log, clock, DAY0 + 86_400_000 + i * 60_000)
    log.close()
    problems = verify_log(tmp_path / "audit", key.public_key()).problems
    assert len(problems) == 1, problems
    assert problems[0].endswith(
        "differential privacy budget overspent on 2023-11-15 (UTC): the windows that started that "
        "day spent ε 1.5 (dp_spent_micro 1500000), above the daily budget of ε 1 in force "
        "(dp_daily_budget_milli 1000)"
    )


def test_a_budget_lowered_during_the_day_applies_at_once(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=100)
    log.append("start", start(policy=DP))
    _spend(log, clock, DAY0)
    log.append("policy_change", {"policy": policy(dp_epsilon_milli=500, dp_daily_budget_milli=1500),
                                 "reason": "reload"})
    _spend(log, clock, DAY0 + 60_000)  # 1.0 under a raised budget: still the day's lowest, 1.0
    log.append("policy_change", {"policy": DP | {"dp_daily_budget_milli": 500}, "reason": "reload"})
    _spend(log, clock, DAY0 + 120_000)  # 1.5 against a budget lowered to 0.5
    log.close()
    problems = verify_log(tmp_path / "audit", key.public_key()).problems
    assert len(problems) == 1
    assert "spent ε 1.5 (dp_spent_micro 1500000), above the daily budget of ε 0.5" in problems[0]


def test_a_raised_budget_counts_on_a_day_with_no_spend_before_it(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The accountant takes the budget of the day's first spend: raised before it, it applies."""
    log = open_log(checkpoint_every_entries=5, segment_max_entries=100)
    log.append("start", start(policy=DP))
    log.append("start", start(policy=DP | {"dp_daily_budget_milli": 2000}, boot=4))
    for i in range(4):
        _spend(log, clock, DAY0 + i * 60_000)
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []
