"""Differential privacy: the discrete Laplace sampler's distribution and the daily budget."""

from __future__ import annotations

import json
import math
import secrets
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.analytics.dp import (
    BudgetAccountant,
    DaySpend,
    DiscreteLaplace,
    bernoulli_exp,
    discrete_laplace,
    exact_epsilon,
)
from agent.clock import FakeClock
from agent.errors import PayloadError

from .faces import seeded

DAY = 86_400
MIDNIGHT = 1_700_006_400  # 2023-11-15 00:00:00 UTC
assert MIDNIGHT % DAY == 0


def test_epsilon_is_the_decimal_written_not_the_binary_float() -> None:
    assert exact_epsilon(0.1) == Fraction(1, 10)
    assert exact_epsilon(1.68) == Fraction(168, 100)
    with pytest.raises(ValueError, match="epsilon must be positive"):
        exact_epsilon(0.0)


def test_bernoulli_exp_has_probability_exp_minus_gamma() -> None:
    rng = seeded(3)
    for gamma in (Fraction(1, 2), Fraction(5, 2)):
        n = 20_000
        hits = sum(bernoulli_exp(gamma, rng) for _ in range(n))
        p = math.exp(-float(gamma))
        assert abs(hits / n - p) < 5 * math.sqrt(p * (1 - p) / n)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    eps=st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.68, 3.0]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_noise_is_integer_centred_symmetric_with_the_geometric_variance(eps: float, seed: int) -> None:
    """Mean ≈ 0, variance ≈ 2p/(1-p)², P(0) = (1-p)/(1+p), as many positives as negatives."""
    n = 4000
    noise = DiscreteLaplace(seeded(seed))
    draws = [noise.sample(eps) for _ in range(n)]
    assert all(type(z) is int for z in draws)
    p = math.exp(-eps)
    var = 2 * p / (1 - p) ** 2
    mean = sum(draws) / n
    assert abs(mean) < 5 * math.sqrt(var / n)
    sample_var = sum((z - mean) ** 2 for z in draws) / (n - 1)
    assert sample_var == pytest.approx(var, rel=0.2)
    p0 = (1 - p) / (1 + p)
    zeros = draws.count(0)
    assert abs(zeros / n - p0) < 5 * math.sqrt(p0 * (1 - p0) / n)
    pos = sum(z > 0 for z in draws)
    neg = sum(z < 0 for z in draws)
    assert abs(pos - neg) < 5 * math.sqrt(pos + neg + 1)


def test_noise_pmf_matches_the_discrete_laplace_at_each_value() -> None:
    eps, n = 0.7, 25_000
    rng = seeded(11)
    draws = [discrete_laplace(exact_epsilon(eps), rng) for _ in range(n)]
    p = math.exp(-eps)
    for z in range(-4, 5):
        expect = (1 - p) / (1 + p) * p ** abs(z)
        got = draws.count(z) / n
        assert abs(got - expect) < 5 * math.sqrt(expect * (1 - expect) / n), z


def test_the_default_randomness_is_the_operating_system_csprng() -> None:
    noise = DiscreteLaplace()
    assert isinstance(noise._rng, secrets.SystemRandom)


def test_budget_stops_spending_when_spent_and_resets_at_utc_midnight(tmp_path: Path) -> None:
    acct = BudgetAccountant(tmp_path, daily_budget=1.0)
    t = MIDNIGHT + 3600
    assert [acct.try_spend(0.4, t + i) for i in range(3)] == [True, True, False]
    assert acct.remaining_micro(t) == 200_000
    assert acct.try_spend(0.2, t) is True
    assert acct.remaining_micro(t) == 0
    assert acct.try_spend(0.4, MIDNIGHT + DAY - 1) is False
    assert acct.try_spend(0.4, MIDNIGHT + DAY) is True


def test_budget_survives_a_restart(tmp_path: Path) -> None:
    BudgetAccountant(tmp_path, 1.0).try_spend(0.75, MIDNIGHT)
    again = BudgetAccountant(tmp_path, 1.0)
    assert again.remaining_micro(MIDNIGHT + 10) == 250_000
    assert again.try_spend(0.5, MIDNIGHT + 10) is False
    data = json.loads((tmp_path / "dp_budget.json").read_text())
    assert data == {"day": "2023-11-15", "spent_micro": 750_000, "budget_micro": 1_000_000}


def test_setting_the_clock_back_does_not_buy_a_fresh_budget(tmp_path: Path) -> None:
    acct = BudgetAccountant(tmp_path, 1.0)
    acct.try_spend(0.5, MIDNIGHT + DAY)
    assert acct.remaining_micro(MIDNIGHT + 10) == 0
    assert acct.try_spend(0.1, MIDNIGHT + 10) is False


def test_a_damaged_budget_file_fails_closed_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "dp_budget.json").write_text("{not json")
    with pytest.raises(PayloadError, match=r"dp_budget\.json: the privacy budget file is damaged"):
        BudgetAccountant(tmp_path, 1.0)
    (tmp_path / "dp_budget.json").write_text('{"day": "2023-11-15", "spent_micro": -5}')
    with pytest.raises(PayloadError, match=r"spent_micro=-5, budget_micro=None; expected a YYYY-MM-DD"):
        BudgetAccountant(tmp_path, 1.0)


def test_a_deeply_nested_budget_file_fails_closed_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "dp_budget.json").write_text("[" * 100_000)  # RecursionError was a traceback
    with pytest.raises(PayloadError, match=r"dp_budget\.json: the privacy budget file is damaged"):
        BudgetAccountant(tmp_path, 1.0)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    spends=st.lists(
        st.tuples(st.sampled_from([0.05, 0.1, 0.3, 0.5, 1.0]), st.integers(min_value=0, max_value=3 * DAY)),
        max_size=25,
    ),
    budget=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_accountant_matches_a_model_and_never_overspends_a_day(
    tmp_path_factory: pytest.TempPathFactory, spends: list[tuple[float, int]], budget: float
) -> None:
    """Spends in time order: accepted iff the day's total stays within budget; disk agrees."""
    folder = tmp_path_factory.mktemp("budget")
    acct = BudgetAccountant(folder, budget)
    spent: dict[int, int] = {}
    for eps, offset in sorted(spends, key=lambda s: s[1]):
        t = MIDNIGHT + offset
        day = offset // DAY
        cost = round(eps * 1_000_000)
        allowed = spent.get(day, 0) + cost <= round(budget * 1_000_000)
        assert acct.try_spend(eps, t) is allowed
        if allowed:
            spent[day] = spent.get(day, 0) + cost
        assert spent.get(day, 0) <= round(budget * 1_000_000)
        assert BudgetAccountant(folder, budget).remaining_micro(t) == acct.remaining_micro(t)


def test_a_budget_raised_during_the_day_applies_from_the_next_day(tmp_path: Path) -> None:
    """A reload or restart with a larger daily_budget must not buy more epsilon today."""
    BudgetAccountant(tmp_path, 1.0).try_spend(1.0, MIDNIGHT + 10)
    raised = BudgetAccountant(tmp_path, 5.0)
    assert raised.remaining_micro(MIDNIGHT + 20) == 0
    assert raised.try_spend(0.5, MIDNIGHT + 20) is False
    assert raised.try_spend(0.5, MIDNIGHT + DAY) is True
    assert raised.remaining_micro(MIDNIGHT + DAY) == 4_500_000


def test_a_budget_lowered_during_the_day_applies_at_once(tmp_path: Path) -> None:
    BudgetAccountant(tmp_path, 2.0).try_spend(0.5, MIDNIGHT + 10)
    lowered = BudgetAccountant(tmp_path, 1.0)
    assert lowered.remaining_micro(MIDNIGHT + 20) == 500_000
    assert lowered.try_spend(0.6, MIDNIGHT + 20) is False
    assert BudgetAccountant(tmp_path, 3.0).remaining_micro(MIDNIGHT + 30) == 500_000


def test_a_missing_budget_file_is_rebuilt_from_the_history_not_reset(tmp_path: Path) -> None:
    asked: list[str] = []

    def history(day: str) -> DaySpend:
        asked.append(day)
        return DaySpend(spent_micro=800_000, budget_micro=1_000_000)

    acct = BudgetAccountant(tmp_path, 2.0, history=history)
    assert acct.remaining_micro(MIDNIGHT + 60) == 200_000
    assert acct.try_spend(0.5, MIDNIGHT + 60) is False
    assert acct.try_spend(0.2, MIDNIGHT + 60) is True
    assert asked == ["2023-11-15"]
    assert BudgetAccountant(tmp_path, 2.0).remaining_micro(MIDNIGHT + 61) == 0


class Ntp:
    """Whether the clock is synchronised, as systemd-timesyncd's flag file says."""

    def __init__(self) -> None:
        self.answered = False

    def __call__(self) -> bool:
        return self.answered


def test_what_was_spent_before_ntp_counts_on_the_day_ntp_sets(tmp_path: Path) -> None:
    """A Pi boots on fake-hwclock's time, three days behind, and spends for two windows; NTP then
    sets the clock. That real day had only its remaining budget left, not all of it."""
    clock, ntp = FakeClock(start=MIDNIGHT + 10 * 3600), Ntp()  # day D 10:00, three days late
    acct = BudgetAccountant(tmp_path, 1.0, synced=(clock, ntp))
    assert acct.try_spend(0.3, clock.time()) is True
    clock.advance(60)
    assert acct.try_spend(0.3, clock.time()) is True
    clock.advance(60)
    clock.set_wall(MIDNIGHT + 3 * DAY + 9 * 3600)  # the real time: day D + 3, 09:00
    ntp.answered = True
    assert acct.remaining_micro(clock.time()) == 400_000
    assert acct.try_spend(0.3, clock.time()) is True
    assert acct.try_spend(0.3, clock.time()) is False
    again = BudgetAccountant(tmp_path, 1.0)  # and so it stays after a restart
    assert again.remaining_micro(clock.time()) == 100_000


def test_only_what_was_spent_since_the_real_day_began_is_carried(tmp_path: Path) -> None:
    clock, ntp = FakeClock(start=MIDNIGHT + 10 * 3600), Ntp()
    acct = BudgetAccountant(tmp_path, 1.0, synced=(clock, ntp))
    assert acct.try_spend(0.5, clock.time()) is True  # 20 h before the clock is set
    clock.advance(19 * 3600)
    assert acct.try_spend(0.2, clock.time()) is True  # 1 h before
    clock.advance(3600)
    clock.set_wall(MIDNIGHT + 5 * DAY + 2 * 3600)  # 02:00: the real day began 2 h ago
    ntp.answered = True
    assert acct.remaining_micro(clock.time()) == 800_000


def test_a_clock_set_within_the_same_day_counts_nothing_twice(tmp_path: Path) -> None:
    clock, ntp = FakeClock(start=MIDNIGHT + 10 * 3600), Ntp()
    acct = BudgetAccountant(tmp_path, 1.0, synced=(clock, ntp))
    assert acct.try_spend(0.4, clock.time()) is True
    clock.set_wall(MIDNIGHT + 11 * 3600)
    ntp.answered = True
    assert acct.remaining_micro(clock.time()) == 600_000
    assert acct.try_spend(0.4, clock.time()) is True
    assert acct.remaining_micro(clock.time()) == 200_000


def test_a_clock_that_crossed_into_the_real_day_before_ntp_still_carries_the_day_before(
    tmp_path: Path,
) -> None:
    """75 minutes behind: 0.5 is spent at 23:30 by the old clock (00:45 really, charged to the
    day before), 0.3 after its midnight; NTP answers at 01:30. The real day spent 0.8."""
    real_day = MIDNIGHT + DAY
    clock, ntp = FakeClock(start=real_day - 30 * 60), Ntp()
    acct = BudgetAccountant(tmp_path, 1.0, synced=(clock, ntp))
    assert acct.try_spend(0.5, clock.time()) is True
    clock.advance(40 * 60)
    assert acct.try_spend(0.3, clock.time()) is True
    clock.advance(5 * 60)
    clock.set_wall(clock.time() + 75 * 60)
    ntp.answered = True
    assert acct.remaining_micro(clock.time()) == 200_000


def test_the_first_window_after_ntp_may_have_opened_on_the_old_clock(tmp_path: Path) -> None:
    """The service asks about a window's start: one opened before NTP answered names the old
    day, which must not lose what the real day carries (nor spend it again)."""
    clock, ntp = FakeClock(start=MIDNIGHT + 10 * 3600), Ntp()
    acct = BudgetAccountant(tmp_path, 1.0, synced=(clock, ntp))
    assert acct.try_spend(0.5, clock.time()) is True
    opened = clock.time() + 30
    clock.advance(90)
    clock.set_wall(MIDNIGHT + 3 * DAY + 9 * 3600)
    ntp.answered = True
    assert acct.try_spend(0.3, opened) is False  # the old day counts as spent: refused, not charged
    assert acct.remaining_micro(clock.time()) == 500_000


def test_a_budget_file_rebuilt_on_the_old_clock_is_rebuilt_for_the_real_day_too(tmp_path: Path) -> None:
    """The file was missing: rebuilt from the audit log for the old clock's day. The audit log
    also says 0.9 was spent on the real day, before the reboot."""
    real_day = MIDNIGHT + 3 * DAY

    def history(day: str) -> DaySpend:
        return DaySpend(900_000 if day == "2023-11-18" else 0)

    clock, ntp = FakeClock(start=MIDNIGHT + 10 * 3600), Ntp()
    acct = BudgetAccountant(tmp_path, 1.0, history=history, synced=(clock, ntp))
    assert acct.try_spend(0.05, clock.time()) is True
    clock.advance(60)
    clock.set_wall(real_day + 9 * 3600)
    ntp.answered = True
    assert acct.remaining_micro(clock.time()) == 50_000
