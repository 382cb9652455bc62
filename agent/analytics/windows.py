"""Clock-aligned windows of people, votes and frame figures: the only statistics that leave.

A window covers [floor(t / L) · L, that + L) for the configured length L (default 60 s). Each
track that counts (confirmed, not static) is taken once, with its latest view (its dominant
emotion smoothed over its life so far), and the cells count the fewest people the tracks could
be (``agent.analytics.anonymity.tally``). When the window closes it becomes a
``WindowReport``: k-anonymity (suppress, or merge into the next window), optional discrete
Laplace noise under a daily budget, the differencing rule, shares in per-mille and circumplex
means × 1000. Frame counts and lifetimes grow with the number of faces (inference per face), so
a suppressed window publishes none of them: the local audit log keeps them. The vision stage's
own load (``StageLoad``) is counted per window the same way, for the health topic, which
publishes it only from windows that published their frame figures (``HealthPeriods``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from agent.analytics.anonymity import (
    Cells,
    CoObserved,
    add_noise,
    fewest_people,
    mean_valence_arousal,
    shares_per_mille,
    tally,
)
from agent.analytics.dp import MICRO, BudgetAccountant, NoiseSource
from agent.analytics.tracker import TrackHandle, TrackView
from agent.clock import Clock

if TYPE_CHECKING:
    from agent.analytics.settings import AnalyticsConfig

logger = logging.getLogger(__name__)

Suppressed = Literal["below_k", "merged", "dp_budget", "differencing"]
MAX_CARRY = 100_000
"""A merge carry larger than this is dropped (suppressed) rather than grow without bound."""


@dataclass(frozen=True, slots=True)
class StageLoad:
    """What the vision stage spent on the frames counted. Every figure grows with the faces in
    view, so it is counted into the window its frames fell in and published (by the health
    topic, ``agent.analytics.health.HealthPeriods``) only from windows that publish their frame
    figures: from an hour's totals, one person in a suppressed window showed (found by review)."""

    vision_ms: float = 0.0
    """Wall time of the vision stage, over the analysed frames."""
    overloaded: int = 0
    """Frames dropped by the full queue or over the CPU budget (not the rate limit's skips)."""
    detector_skipped: int = 0
    emotion_reused: int = 0
    budget_dropped: int = 0
    static_cells: frozenset[str] = frozenset()
    """Grid cells where a face stood still (``Tracker.static_cells``)."""

    def plus(self, other: StageLoad) -> StageLoad:
        return StageLoad(
            vision_ms=self.vision_ms + other.vision_ms,
            overloaded=self.overloaded + other.overloaded,
            detector_skipped=self.detector_skipped + other.detector_skipped,
            emotion_reused=self.emotion_reused + other.emotion_reused,
            budget_dropped=self.budget_dropped + other.budget_dropped,
            static_cells=self.static_cells | other.static_cells,
        )


NO_LOAD = StageLoad()


@dataclass(frozen=True, slots=True)
class FrameCounters:
    """Frame figures since the previous ``add_frame`` call (deltas, not totals)."""

    captured: int = 1
    analysed: int = 1
    dropped: int = 0
    lifetimes_ms: Sequence[float] = ()
    """Frame lifetimes recorded since the last call (``LifetimeRecorder.drain().samples_ms``)."""
    discarded: int = 0
    """Zeroed unseen because capture stopped (left queued at a close, or read after it)."""
    queued: int | None = None
    """Frames captured and still waiting when these figures were taken (None: not measured)."""
    load: StageLoad = NO_LOAD


class LifetimeHistogram:
    """Lifetimes rounded up to whole ms, counted per ms: exact max and p99, bounded memory."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0

    def add(self, ms: float) -> None:
        self._counts[max(0, math.ceil(ms))] += 1
        self.count += 1

    @property
    def max_ms(self) -> int:
        return max(self._counts, default=0)

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile, as ``LifetimeStats.percentile`` but in whole ms (rounded up)."""
        if not self.count:
            return 0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for ms in sorted(self._counts):
            seen += self._counts[ms]
            if seen >= rank:
                return ms
        return self.max_ms  # pragma: no cover - rank <= count always reaches a bucket


@dataclass(frozen=True, slots=True)
class WindowReport:
    """One closed window; ``to_body`` gives the integers-only object that gets signed."""

    window_start: int
    window_end: int
    covers_from: int
    """Start of the earliest window merged into this one (== window_start without merging)."""
    complete: bool
    """False when flushed before its end (end of a file, shutdown, a reload), or when the run
    began counting after its start (a run's first window: a restart inside a window publishes
    two parts of it under one ``window_start``, each incomplete, to be added up)."""
    k: int
    suppressed: Suppressed | None
    people: int | None
    votes: dict[str, int] | None
    shares_pm: dict[str, int] | None
    abstained: dict[str, int] | None
    valence_milli: int | None
    arousal_milli: int | None
    frames_captured: int
    frames_analysed: int
    frames_dropped: int
    lifetime_count: int
    lifetime_max_ms: int
    lifetime_p99_ms: int
    noise: bool
    epsilon_micro: int | None = None
    budget_left_micro: int | None = None
    epsilon_spent_micro: int = 0
    """Epsilon this window took from the daily budget (0 when none: DP off, refused, nobody)."""
    frames_discarded: int = 0
    frames_queued: int = 0
    """Frames captured and still waiting for analysis when the window's last figures were taken."""
    closed_by: str | None = None
    """``reload``: a config reload that changed what is counted closed it early; the window then
    ends at the reload and the next one starts there, with the new settings."""
    load: StageLoad = NO_LOAD
    """The vision stage's load over this window's frames: never in ``to_body`` (health's)."""

    @property
    def breakdown(self) -> bool:
        return self.suppressed is None

    @property
    def shows_frames(self) -> bool:
        """Whether ``to_body`` publishes the frame figures: only with the breakdown, and never
        with noise on (exact, they would tell neighbouring crowds apart)."""
        return self.suppressed is None and not self.noise

    def to_body(self) -> dict[str, int | str | bool | dict[str, int] | None]:
        """Plain JSON object for the ``stats`` topic; integers only, no ids, no boxes.

        A suppressed window carries no frame figures (they vary with the number of faces) and
        no earlier ``covers_from`` (it would tell whether a merged window before it had anyone).
        With noise on, no window carries frame figures: exact, they would tell neighbouring
        crowds apart whatever the noise on the cells (the audit log keeps them)."""
        shown = self.suppressed is None
        figures = self.shows_frames
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "covers_from": self.covers_from if shown else self.window_start,
            "complete": self.complete,
            "k": self.k,
            "suppressed": self.suppressed,
            "people": self.people,
            "votes": self.votes,
            "shares_pm": self.shares_pm,
            "abstained": self.abstained,
            "valence_milli": self.valence_milli,
            "arousal_milli": self.arousal_milli,
            "frames": {
                "captured": self.frames_captured,
                "analysed": self.frames_analysed,
                "dropped": self.frames_dropped,
            }
            if figures
            else None,
            "lifetime_ms": {
                "count": self.lifetime_count,
                "max": self.lifetime_max_ms,
                "p99": self.lifetime_p99_ms,
            }
            if figures
            else None,
            "noise": self.noise,
            "epsilon_micro": self.epsilon_micro,
            "budget_left_micro": self.budget_left_micro,
            "closed_by": self.closed_by,
        }


@dataclass
class _Window:
    start: int
    length: int
    people: dict[TrackHandle, TrackView] = field(default_factory=dict)
    captured: int = 0
    analysed: int = 0
    dropped: int = 0
    discarded: int = 0
    lifetimes: LifetimeHistogram = field(default_factory=LifetimeHistogram)
    load: StageLoad = NO_LOAD
    joined_late: bool = False
    """The run began counting after the window's start: its figures are only a part of it."""

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class _Carry:
    covers_from: int
    people: dict[TrackHandle, TrackView]
    joined_late: bool = False


class WindowAggregator:
    """Collects frames into clock-aligned windows and turns closed windows into reports."""

    def __init__(
        self,
        settings: AnalyticsConfig,
        clock: Clock,
        dp: NoiseSource | None = None,
        accountant: BudgetAccountant | None = None,
        *,
        resume_at: int | None = None,
    ) -> None:
        """``resume_at``: after a reload closed a window early, the first window starts there
        (not at its aligned start), so no window is ever published twice."""
        self.length = settings.window_seconds
        self.k = settings.min_people
        self.mode = settings.small_window
        self.differencing = settings.differencing if not settings.dp.enabled else "off"
        self.clock = clock
        self.epsilon: float | None = settings.dp.epsilon_per_window if settings.dp.enabled else None
        if self.epsilon is not None and (dp is None or accountant is None):
            raise ValueError("analytics.dp.enabled needs a noise source and a budget accountant")
        self._noise = dp
        self._accountant = accountant
        self._current: _Window | None = None
        self._carry: _Carry | None = None
        self._ready: list[WindowReport] = []
        self._queued = 0
        self._resume_at = resume_at
        self._since: float | None = None
        self._published: dict[TrackHandle, TrackView] | None = None
        """People counted (voters and abstainers) in the last window that published a breakdown
        (the differencing rule)."""
        self._seen = CoObserved()
        """Which tracks were seen in one frame together: the fewest people they can be."""

    def counting_from(self, t: float) -> None:
        """The run began counting at window time ``t`` (its start): a window that began earlier
        holds only a part of its span, and says so (``complete: false``) instead of passing
        for the whole (a restart used to publish the second part of a window as complete)."""
        self._since = t
        if self._current is not None and self._current.start < t:
            self._current.joined_late = True

    @property
    def resume_pending(self) -> int | None:
        """Where the first window will start, when a reload said so and no frame came since."""
        return self._resume_at

    def window_start(self, t: float) -> int:
        return math.floor(t / self.length) * self.length

    def add_frame(self, t: float, views: Iterable[TrackView], counters: FrameCounters) -> None:
        """Count one analysed frame (or a batch of counters) at wall time ``t``."""
        window = self._window_for(t)
        views = list(views)
        self._seen.frame(view.handle for view in views)
        for view in views:
            if view.confirmed:
                window.people[view.handle] = view  # latest view wins: one vote per track
        self._count(window, counters)

    def count_closing(self, counters: FrameCounters) -> None:
        """The camera's frames since the last one analysed, counted as the open window closes:
        into that window, whatever the time (it may be a pace point after its end), so whether
        the camera gave the window a frame does not hang on whether the loop took one."""
        if self._current is None:
            self.add_frame(self.clock.time(), (), counters)
        else:
            self._count(self._current, counters)

    def _count(self, window: _Window, counters: FrameCounters) -> None:
        window.captured += counters.captured
        window.analysed += counters.analysed
        window.dropped += counters.dropped
        window.discarded += counters.discarded
        if counters.queued is not None:
            self._queued = counters.queued
        for ms in counters.lifetimes_ms:
            window.lifetimes.add(ms)
        window.load = window.load.plus(counters.load)

    def poll(self, now: float | None = None) -> list[WindowReport]:
        """Close the window if its end has passed; keep a window open so quiet minutes report too."""
        now = self.clock.time() if now is None else now
        self._window_for(now)
        out, self._ready = self._ready, []
        return out

    def due_at(self) -> float | None:
        """Wall time ``poll`` will close the open window (None: none open); one a frame closed
        already waits to be handed on: due at once."""
        if self._ready:
            return -math.inf
        return None if self._current is None else self._current.end

    def due(self, now: float | None = None) -> bool:
        """Whether ``poll`` would close a window now (or hand on one a frame closed): window
        ends are multiples of the length, so ``window_start(now)`` reaches one when ``now`` does."""
        at = self.due_at()
        return at is not None and (self.clock.time() if now is None else now) >= at

    def flush(self, now: float | None = None, *, reload: bool = False) -> list[WindowReport]:
        """Close the open window now (end of a file, shutdown); a pending merge is published
        suppressed. ``reload``: the window ends at ``now`` (rounded up to a second) and says so;
        pass that second as the next aggregator's ``resume_at``."""
        now = self.clock.time() if now is None else now
        window, self._current = self._current, None
        if window is not None:
            complete = now >= window.end
            if reload and not complete:
                window.length = max(1, math.ceil(now) - window.start)
            report = self._close(window, complete=complete, final=True)
            if reload and not complete:
                report = replace(report, closed_by="reload")
            self._ready.append(report)
        out, self._ready = self._ready, []
        return out

    def _window_for(self, t: float) -> _Window:
        if self._resume_at is not None and t < self._resume_at:
            # A frame of the second a reload closed (rounded up) counts in the window after
            # it: opening the aligned window here would publish the closed one again.
            t = self._resume_at
        start = self.window_start(t)
        current = self._current
        if current is not None and start < current.end:
            return current  # same window (or a clock step backwards: stay in it)
        if current is not None:
            self._ready.append(self._close(current, complete=True, final=False))
        late = self._since is not None and start < self._since
        self._current = _Window(start, self.length, joined_late=late)
        resume, self._resume_at = self._resume_at, None
        if resume is not None and start < resume < start + self.length:
            self._current = _Window(resume, start + self.length - resume)
        return self._current

    def _close(self, window: _Window, complete: bool, final: bool) -> WindowReport:
        people = window.people
        covers_from = window.start
        carried_late = False
        if self._carry is not None:
            people = {**self._carry.people, **window.people}
            covers_from = self._carry.covers_from
            carried_late = self._carry.joined_late
            self._carry = None
        cells, suppressed, spent = self._release(window, people)
        if suppressed is None and self._too_close_to_last(people):
            cells, suppressed = None, "differencing"
        carry = self.mode == "merge" if suppressed == "below_k" else self.differencing == "merge"
        if suppressed in ("below_k", "differencing") and carry and not final and window.captured:
            # The label does not depend on whether anyone was seen (0 and 1 person look alike).
            if 0 < len(people) < MAX_CARRY:
                self._carry = _Carry(covers_from, people, window.joined_late or carried_late)
            suppressed = "merged"
        # Only a published union says it began in a partial window: a carry exists only when
        # someone was seen, so a suppressed window that said so would tell (found by review).
        joined_late = window.joined_late or (carried_late and suppressed is None)
        if self.epsilon is not None:
            # With noise on, nothing published may be an exact function of who was there: a
            # union's span (covers_from, and complete) would say whether the suppressed window
            # before it had anyone, whatever the noise (found by review). Its counts still hold
            # the carried people, noised.
            covers_from, joined_late = window.start, window.joined_late
        if suppressed is None:
            self._published = _counted(people)
        # What the next comparisons can still ask about: this window's tracks (many go on into
        # the next), what it carries on, and the people of the last published window.
        self._seen.keep(set(people) | set(self._published or ()))
        complete = complete and not joined_late
        report = self._report(window, covers_from, complete, cells, suppressed, spent_micro=spent)
        logger.info(
            "window closed",
            extra={
                "fields": {
                    "window_start": report.window_start,
                    "suppressed": report.suppressed,
                    "frames_analysed": report.frames_analysed,
                }
            },
        )
        return report

    def _too_close_to_last(self, people: dict[TrackHandle, TrackView]) -> bool:
        """The differencing rule: between 1 and k-1 people (at least) joined or left the people
        published since the last published window, so comparing the two would single them out.
        Those who abstained count as well as the voters: ``people`` and ``abstained`` are
        published too (one person who arrived with a turned face showed as people 6, turned 1
        against 5 and 0; found by review)."""
        if self.differencing == "off" or self._published is None:
            return False
        now, last = _counted(people), self._published
        joined = [v for h, v in now.items() if h not in last]
        left = [v for h, v in last.items() if h not in now]
        together = self._seen.together
        changed = max(fewest_people(joined, together), fewest_people(left, together))
        return 0 < changed < self.k

    def _release(
        self, window: _Window, people: dict[TrackHandle, TrackView]
    ) -> tuple[Cells | None, Suppressed | None, int]:
        """Noise and budget, then k: on the fewest distinct people the voters' tracks could be
        (all cells together: one person lost and found again with another emotion is one
        person, not one per cell), or with noise on, on the noisy voters.

        A window to which the camera gave no frame (camera down, closed hours) is suppressed
        without spending budget, whoever is carried into it: that choice depends on the
        camera's frame count only, which does not vary with the faces (a carry would tell
        whether the window before had anyone), so it leaks nothing; the carry ends there. It
        used to be "no frame analysed", which also held when the loop, idle before the window's
        end for twice its longest recent analysis, took none of the camera's frames after the
        camera opened late in the window: the label and the budget then told how long the
        analyses before had been, which grows with the faces (found by review).
        """
        if window.captured == 0:
            return None, "below_k", 0
        cells = tally(people.values(), self._seen.together)
        spent = 0
        if self.epsilon is not None:
            accountant, noise = self._accountant, self._noise
            if accountant is None or noise is None:  # pragma: no cover - refused in __init__
                raise RuntimeError("differential privacy is on without noise or accountant")
            if not accountant.try_spend(self.epsilon, window.start):
                return None, "dp_budget", 0
            spent = round(self.epsilon * MICRO)
            cells = add_noise(cells, noise, self.epsilon)
            if cells.voters < self.k:
                return None, "below_k", spent
        elif fewest_people(_voters(people).values(), self._seen.together) < self.k:
            return None, "below_k", spent
        return cells, None, spent

    def _report(
        self,
        window: _Window,
        covers_from: int,
        complete: bool,
        cells: Cells | None,
        suppressed: Suppressed | None,
        *,
        spent_micro: int = 0,
    ) -> WindowReport:
        votes = cells.votes if cells is not None else None
        va = mean_valence_arousal(votes) if votes is not None else None
        eps = round(self.epsilon * MICRO) if self.epsilon is not None else None
        left = self._accountant.remaining_micro(window.start) if self._accountant and eps else None
        return WindowReport(
            window_start=window.start,
            window_end=window.end,
            covers_from=covers_from,
            complete=complete,
            k=self.k,
            suppressed=suppressed,
            people=cells.people if cells is not None else None,
            votes=votes,
            shares_pm=shares_per_mille(votes) if votes is not None else None,
            abstained=cells.abstained if cells is not None else None,
            valence_milli=va[0] if va else None,
            arousal_milli=va[1] if va else None,
            frames_captured=window.captured,
            frames_analysed=window.analysed,
            frames_dropped=window.dropped,
            lifetime_count=window.lifetimes.count,
            lifetime_max_ms=window.lifetimes.max_ms,
            lifetime_p99_ms=window.lifetimes.percentile(99),
            noise=self.epsilon is not None,
            epsilon_micro=eps,
            budget_left_micro=left,
            epsilon_spent_micro=spent_micro,
            frames_discarded=window.discarded,
            frames_queued=self._queued,
            load=window.load,
        )


def _counted(people: dict[TrackHandle, TrackView]) -> dict[TrackHandle, TrackView]:
    """The tracks a published window counts: its voters and those who abstained."""
    return {h: v for h, v in people.items() if v.counts}


def _voters(people: dict[TrackHandle, TrackView]) -> dict[TrackHandle, TrackView]:
    return {h: v for h, v in people.items() if v.counts and v.emotion is not None}
