"""Differential privacy: exact discrete Laplace noise and a daily epsilon budget on disk.

Noise. Each published count gets Z with P(Z = z) = (1 - p) / (1 + p) · p^|z|, p = exp(-ε)
(the two-sided geometric or discrete Laplace distribution; variance 2p / (1 - p)²). One
person adds one to exactly one cell of a window (one vote, or one abstention), so the L1
sensitivity of the cell vector is 1 and noise of parameter ε on every cell gives ε-DP per
window. Sampling is exact, with integer arithmetic only, following Canonne, Kamath and Steinke,
"The Discrete Gaussian for Differential Privacy" (NeurIPS 2020, Algorithms 1 and 2): no
floating-point Laplace, whose rounding leaks (Mironov 2012). Randomness comes from ``secrets``
(``SystemRandom``); tests inject a seeded ``random.Random``.

Budget. ``BudgetAccountant`` keeps the epsilon spent during the current UTC day, and the
lowest daily budget in force that day, in a small JSON file in ``state_dir`` (written
atomically, integers in micro-epsilon). A window that would overspend is refused; the day rolls
over at 00:00 UTC. An unreadable file fails closed. A missing file is rebuilt from the audit log
(``history``: the spend its ``window`` entries record for the day, and the lowest budget its
policy records name), so deleting the file buys nothing. A budget raised during a day (a
reload, a restart with a new config) applies from the next day; a lowered one at once.

A Raspberry Pi has no real-time clock: until NTP answers it runs on fake-hwclock's last saved
time, often days behind, and the windows it spends for are charged to that day. When the clock
is then set (``synced``), the epsilon spent before, in as much of the monotonic time as falls
in the real day, is charged to the real day as well: else a Pi rebooted after days off, whose
clock NTP set hours later, gave that day its whole budget on top of what it had spent.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from agent.atomic import write_atomic
from agent.clock import Clock
from agent.errors import PayloadError

MICRO = 1_000_000


class RandomSource(Protocol):
    """What the samplers need: uniform integers in [0, stop), as ``random.Random`` offers."""

    def randrange(self, stop: int, /) -> int: ...


def exact_epsilon(epsilon: float) -> Fraction:
    """The decimal the user wrote (0.1 -> 1/10), not the binary float nearest to it."""
    value = Fraction(repr(float(epsilon)))
    if value <= 0:
        raise ValueError(f"epsilon must be positive (found {epsilon})")
    return value


def bernoulli(prob: Fraction, rng: RandomSource) -> bool:
    """True with probability ``prob`` (0..1), exactly."""
    return rng.randrange(prob.denominator) < prob.numerator


def bernoulli_exp(gamma: Fraction, rng: RandomSource) -> bool:
    """True with probability exp(-gamma), gamma >= 0, exactly (CKS 2020, Algorithm 1)."""
    while gamma > 1:
        if not bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def geometric_exp(x: Fraction, rng: RandomSource) -> int:
    """G >= 0 with P(G = g) = (1 - e^-x) e^(-x g), exactly (CKS 2020, Algorithm 2, inner loop)."""
    s, t = x.numerator, x.denominator
    while True:
        u = rng.randrange(t)
        if bernoulli_exp(Fraction(u, t), rng):
            break
    v = 0
    while bernoulli_exp(Fraction(1), rng):
        v += 1
    return (v * t + u) // s


def discrete_laplace(epsilon: Fraction, rng: RandomSource) -> int:
    """Z with P(Z = z) proportional to exp(-epsilon |z|) (CKS 2020, Algorithm 2)."""
    while True:
        negative = bernoulli(Fraction(1, 2), rng)
        magnitude = geometric_exp(epsilon, rng)
        if negative and magnitude == 0:
            continue  # zero would otherwise be drawn twice as often
        return -magnitude if negative else magnitude


class NoiseSource(Protocol):
    """Adds noise to one count; the real one is ``DiscreteLaplace``, tests may script one."""

    def sample(self, epsilon: float) -> int: ...


class DiscreteLaplace:
    """Discrete Laplace noise from a CSPRNG (``secrets.SystemRandom`` unless one is injected)."""

    def __init__(self, rng: RandomSource | None = None) -> None:
        self._rng: RandomSource = rng if rng is not None else secrets.SystemRandom()

    def sample(self, epsilon: float) -> int:
        return discrete_laplace(exact_epsilon(epsilon), self._rng)


def utc_day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def atomic_write_json(path: Path, data: dict[str, object]) -> None:
    """``data`` as sorted-key JSON in ``path`` (folder made if missing); a crash leaves old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, sort_keys=True).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class DaySpend:
    """What a record (the budget file, the audit log) says about one UTC day."""

    spent_micro: int
    budget_micro: int | None = None
    """The lowest daily budget in force that day; None when the record does not say."""


History = Callable[[str], DaySpend]
"""Rebuilds a day's spend from another record (the audit log) when the budget file is missing."""

DAY_S = 86_400
UNSYNCED_KEEP_S = DAY_S
"""Spends on an unsynchronised clock older than this (monotonic) can no longer fall in the day
the clock is set to: forgotten (a device that never learns the time keeps no growing list)."""


class BudgetAccountant:
    """Epsilon spent per UTC day, persisted so a restart cannot reset the budget."""

    FILE_NAME = "dp_budget.json"

    def __init__(
        self,
        state_dir: Path,
        daily_budget: float,
        history: History | None = None,
        *,
        synced: tuple[Clock, Callable[[], bool]] | None = None,
    ) -> None:
        """``synced``: the clock and whether its wall time is known to be right (NTP has
        answered); without it every spend is taken at its clock's word."""
        self.path = Path(state_dir) / self.FILE_NAME
        self.budget_micro = round(daily_budget * MICRO)
        self._history = history
        self._day, self._spent, self._day_budget = self._load()
        self._missing = self._day == ""
        self._synced = synced
        self._unsynced: list[tuple[float, int, str]] = []
        """(monotonic s, micro-epsilon, the day it was charged to) of each spend made before the
        clock was synchronised."""
        self._settled = synced is None
        """The clock was seen synchronised and what was spent before it charged (``_settle``)."""
        self._recovered_unsynced = False
        """The spend was rebuilt from the history for a day an unsynchronised clock named."""

    def _load(self) -> tuple[str, int, int | None]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return "", 0, None
        except OSError as exc:
            raise PayloadError(f"{self.path}: cannot read the privacy budget: {exc}") from exc
        try:
            data = json.loads(text)
            day, spent = data["day"], data["spent_micro"]
            budget = data.get("budget_micro")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise PayloadError(
                f"{self.path}: the privacy budget file is damaged (expected "
                '{"day": "YYYY-MM-DD", "spent_micro": N, "budget_micro": N}); the agent will not '
                "guess how much epsilon was spent today: restore it or remove it knowingly (the "
                "day's spend is then rebuilt from the audit log)"
            ) from exc
        if not isinstance(day, str) or not _count(spent) or not (budget is None or _count(budget)):
            raise PayloadError(
                f"{self.path}: the privacy budget file holds day={day!r}, spent_micro={spent!r}, "
                f"budget_micro={budget!r}; expected a YYYY-MM-DD string and non-negative integers"
            )
        return day, spent, budget

    def _recover(self, day: str) -> None:
        """No file: take the day's spend and budget from the audit log, once, for that day."""
        self._missing = False
        if self._history is None:
            return
        self._recovered_unsynced = self._synced is not None and not self._synced[1]()
        record = self._history(day)
        logged = record.budget_micro
        budget = self.budget_micro if logged is None else min(self.budget_micro, logged)
        self._day, self._spent, self._day_budget = day, record.spent_micro, budget
        atomic_write_json(self.path, {"day": day, "spent_micro": self._spent, "budget_micro": budget})

    def day_budget_micro(self, at: float) -> int:
        """The budget in force on the day of ``at``: never above what that day already allowed."""
        day = utc_day(at)
        if self._missing:
            self._recover(day)
        if day == self._day and self._day_budget is not None:
            return min(self.budget_micro, self._day_budget)
        return self.budget_micro

    def spent_micro(self, at: float) -> int:
        """Epsilon (micro units) already spent on the UTC day of ``at``.

        A day earlier than the stored one (the clock was set back) counts as fully spent:
        winding the clock back must not buy a fresh budget.
        """
        day = utc_day(at)
        if self._missing:
            self._recover(day)
        self._settle()
        if day < self._day:
            return self.day_budget_micro(at)
        return self._spent if day == self._day else 0

    def _settle(self) -> None:
        """The first time the clock is seen synchronised: the spends made before it that fall,
        by monotonic time, in the real day but were charged to another (the old clock's) day
        are charged to the real one, on top of what the history records for it when the spend
        was rebuilt from the history for the old clock's day. Whatever day a caller asks about:
        the real day is the clock's, not that of a window opened on the old clock."""
        if self._settled or self._synced is None:
            return
        clock, synced = self._synced
        if not synced():
            return
        self._settled = True
        now = clock.time()
        real, began = utc_day(now), clock.monotonic() - (now - math.floor(now / DAY_S) * DAY_S)
        carried = sum(cost for at, cost, day in self._unsynced if at >= began and day != real)
        self._unsynced = []
        if real < self._day:  # a stored day after the real one counts as spent (``spent_micro``)
            return
        if real == self._day:
            spent, budget = self._spent + carried, self._day_budget
        else:
            spent, budget = carried, self.budget_micro
            if self._recovered_unsynced and self._history is not None:
                record = self._history(real)
                spent += record.spent_micro
                if record.budget_micro is not None:
                    budget = min(budget, record.budget_micro)
        if (real, spent, budget) != (self._day, self._spent, self._day_budget) and (
            carried or self._recovered_unsynced
        ):
            self._day, self._spent, self._day_budget = real, spent, budget
            record_json = {"day": real, "spent_micro": spent, "budget_micro": budget}
            atomic_write_json(self.path, record_json)

    def remaining_micro(self, at: float) -> int:
        return max(0, self.day_budget_micro(at) - self.spent_micro(at))

    def try_spend(self, epsilon: float, at: float) -> bool:
        """Spend ``epsilon`` on the day of ``at`` if the budget allows; persist before answering."""
        cost = round(epsilon * MICRO)
        spent, budget = self.spent_micro(at), self.day_budget_micro(at)
        allowed = spent + cost <= budget
        if not allowed and (utc_day(at) != self._day or budget == self._day_budget):
            return False  # nothing new to remember (a lowered budget is remembered below)
        self._day, self._spent, self._day_budget = utc_day(at), spent + cost * allowed, budget
        atomic_write_json(
            self.path, {"day": self._day, "spent_micro": self._spent, "budget_micro": budget}
        )
        if allowed and not self._settled and self._synced is not None:
            now = self._synced[0].monotonic()
            self._unsynced = [u for u in self._unsynced if u[0] >= now - UNSYNCED_KEEP_S]
            self._unsynced.append((now, cost, self._day))
        return allowed


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
