"""Alert rules over window reports: raised and cleared events with hysteresis and cooldown.

A rule reads one metric of a window, in integers: ``share`` of a set of labels (per-mille of
the voters), mean ``valence`` or ``arousal`` (× 1000), or ``people``. In ``absolute`` mode it
compares the value to its threshold; in ``baseline`` mode it compares the z-score (× 1000) of
the value against this device's rolling hour-of-week baseline (``agent.analytics.baseline``).

State machine per rule, one step per window:

- idle: a window *matches* when its value is strictly above (below) ``threshold``; after
  ``windows_in_row`` matching windows in a row the rule raises, unless it raised less than
  ``cooldown_seconds`` before (then it raises at the first matching window after the cooldown).
- raised: a window is *past clear* when its value is at or below (at or above)
  ``clear_threshold`` (default: ``threshold``); after ``clear_windows`` such windows in a row
  the rule clears.
- A window the rule cannot judge (breakdown suppressed, fewer than ``min_people`` people, a
  baseline slot still learning) breaks a raise streak and counts as past clear: the condition
  is no longer observed.

Time is the window's own (its end), never the wall clock, so a replayed file alerts exactly as
a live camera would. Rule state is kept in memory: a restart starts every rule idle.

Besides the transitions (``AlertEvent``, topic ``alert``), ``AlertEngine.states`` gives every
rule's current state (``AlertState``), which the service publishes retained on
``alert/<rule>`` at start, after each transition and after a reload: a dashboard that (re)starts
reads the state the agent holds now, and a restarted agent replaces an old ``raised`` with the
``cleared`` it actually holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from agent.analytics.baseline import Baseline
from agent.analytics.settings import AlertRuleConfig
from agent.analytics.windows import WindowReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of one rule; ``to_body`` is the integers-only object for the alert topic."""

    rule: str
    state: Literal["raised", "cleared"]
    metric: str
    mode: str
    value: int | None
    """The window's metric value (per-mille, × 1000, or people); None when not judged."""
    threshold: int
    """The threshold crossed, in the same units (a z-score × 1000 in baseline mode)."""
    z_milli: int | None
    baseline_milli: int | None
    """Baseline mean of the slot, in the value's units (people × 1000, to keep decimals)."""
    window_start: int
    window_end: int

    def as_state(self) -> AlertState:
        """The rule's state right after this transition."""
        return AlertState(self.rule, self.state, self.window_end)

    def to_body(self) -> dict[str, int | str | None]:
        return {
            "rule": self.rule,
            "state": self.state,
            "metric": self.metric,
            "mode": self.mode,
            "value": self.value,
            "threshold": self.threshold,
            "z_milli": self.z_milli,
            "baseline_milli": self.baseline_milli,
            "window_start": self.window_start,
            "window_end": self.window_end,
        }


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one rule stands now; ``to_body`` is the retained ``alert/<rule>`` message."""

    rule: str
    state: Literal["raised", "cleared"]
    since: int | None
    """Window end (Unix s) of the transition that set the state; None when this run has not seen
    one (the rule started idle: after a restart nothing is known to be raised)."""

    def to_body(self) -> dict[str, int | str | None]:
        return {"rule": self.rule, "state": self.state, "since": self.since}


def metric_key(rule: AlertRuleConfig) -> str:
    """Name of the metric in the baseline table: ``share:angry+fear``, ``valence``, ..."""
    if rule.metric == "share":
        return "share:" + "+".join(sorted(rule.labels))
    return rule.metric


def metric_value(report: WindowReport, rule: AlertRuleConfig) -> int | None:
    """The rule's metric in integer units, or None when the window has no breakdown."""
    if not report.breakdown or report.votes is None or report.people is None:
        return None
    if rule.metric == "people":
        return report.people
    if rule.metric == "valence":
        return report.valence_milli
    if rule.metric == "arousal":
        return report.arousal_milli
    voters = sum(report.votes.values())
    if voters == 0:
        return None
    chosen = sum(report.votes[label] for label in rule.labels)
    return (2000 * chosen + voters) // (2 * voters)  # per-mille, rounded half up


def scale(rule: AlertRuleConfig) -> int:
    """Integer units per natural unit of the rule's metric (people are counted as they are)."""
    return 1 if rule.metric == "people" else 1000


def _to_int(x: float) -> int:
    return round(x)


@dataclass
class _RuleState:
    active: bool = False
    raise_streak: int = 0
    clear_streak: int = 0
    last_raised: int | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class _Judgement:
    value: int | None
    compared: int | None
    z_milli: int | None
    baseline_milli: int | None


class AlertEngine:
    """Evaluates every rule on each closed window, in order; returns the transitions."""

    def __init__(self, rules: Sequence[AlertRuleConfig], baseline: Baseline | None = None) -> None:
        self.rules = list(rules)
        if any(r.mode == "baseline" for r in self.rules) and baseline is None:
            raise ValueError("an alert rule in baseline mode needs a Baseline (state_dir)")
        self.baseline = baseline
        self._state = {r.name: _RuleState() for r in self.rules}

    def active(self) -> list[str]:
        """Names of the rules currently raised."""
        return [name for name, st in self._state.items() if st.active]

    def states(self) -> list[AlertState]:
        """Every rule's current state, in rule order."""
        return [
            AlertState(r.name, "raised" if st.active else "cleared", st.since)
            for r in self.rules
            for st in (self._state[r.name],)
        ]

    def take_over(self, previous: AlertEngine, at: int) -> list[AlertEvent]:
        """After a config reload: keep the state of every rule whose definition did not change;
        a raised rule that was removed or changed is cleared now (at Unix time ``at``), so no
        dashboard waits forever for a clear that the new engine would never send."""
        events = []
        for old in previous.rules:
            state = previous._state[old.name]
            same = next((r for r in self.rules if r == old), None)
            if same is not None:
                self._state[same.name] = _RuleState(**vars(state))
            elif state.active:
                clear = old.threshold if old.clear_threshold is None else old.clear_threshold
                unit = 1000 if old.mode == "baseline" else scale(old)
                events.append(
                    AlertEvent(
                        old.name,
                        "cleared",
                        metric_key(old),
                        old.mode,
                        None,
                        _to_int(clear * unit),
                        None,
                        None,
                        at,
                        at,
                    )
                )
        return events

    def evaluate(self, report: WindowReport) -> list[AlertEvent]:
        events = []
        for rule in self.rules:
            judged = self._judge(rule, report)
            event = self._step(rule, judged, report)
            if event is not None:
                events.append(event)
                logger.info("alert %s", event.state, extra={"fields": {"rule": rule.name}})
        self._learn(report)
        return events

    def _judge(self, rule: AlertRuleConfig, report: WindowReport) -> _Judgement:
        value = metric_value(report, rule)
        if value is None or report.people is None or report.people < rule.min_people:
            return _Judgement(value, None, None, None)
        if rule.mode == "absolute":
            return _Judgement(value, value, None, None)
        baseline = self.baseline
        stats = baseline.stats(metric_key(rule), report.window_start) if baseline is not None else None
        if baseline is None or stats is None:
            return _Judgement(value, None, None, None)
        floor = baseline.settings.min_stdev * scale(rule)
        z_milli = _to_int(1000 * (value - stats.mean) / max(stats.stdev, floor))
        return _Judgement(value, z_milli, z_milli, _to_int(stats.mean * 1000 / scale(rule)))

    def _step(self, rule: AlertRuleConfig, judged: _Judgement, report: WindowReport) -> AlertEvent | None:
        st = self._state[rule.name]
        unit = 1000 if rule.mode == "baseline" else scale(rule)
        raise_at = _to_int(rule.threshold * unit)
        clear_at = _to_int((rule.threshold if rule.clear_threshold is None else rule.clear_threshold) * unit)
        c = judged.compared
        above = rule.comparison == "above"
        if not st.active:
            matches = c is not None and (c > raise_at if above else c < raise_at)
            st.raise_streak = st.raise_streak + 1 if matches else 0
            cooled = st.last_raised is None or report.window_end - st.last_raised >= rule.cooldown_seconds
            if st.raise_streak >= rule.windows_in_row and cooled:
                st.active, st.raise_streak, st.clear_streak = True, 0, 0
                st.last_raised = st.since = report.window_end
                return self._event(rule, "raised", judged, raise_at, report)
            return None
        past_clear = c is None or (c <= clear_at if above else c >= clear_at)
        st.clear_streak = st.clear_streak + 1 if past_clear else 0
        if st.clear_streak >= rule.clear_windows:
            st.active, st.clear_streak, st.since = False, 0, report.window_end
            return self._event(rule, "cleared", judged, clear_at, report)
        return None

    @staticmethod
    def _event(
        rule: AlertRuleConfig,
        state: Literal["raised", "cleared"],
        judged: _Judgement,
        threshold: int,
        report: WindowReport,
    ) -> AlertEvent:
        return AlertEvent(
            rule=rule.name,
            state=state,
            metric=metric_key(rule),
            mode=rule.mode,
            value=judged.value,
            threshold=threshold,
            z_milli=judged.z_milli,
            baseline_milli=judged.baseline_milli,
            window_start=report.window_start,
            window_end=report.window_end,
        )

    def _learn(self, report: WindowReport) -> None:
        """Fold this window into the baseline after judging it (a window is not its own normal)."""
        if self.baseline is None:
            return
        values = {}
        for rule in self.rules:
            if rule.mode != "baseline":
                continue
            value = metric_value(report, rule)
            if value is not None and report.people is not None and report.people >= rule.min_people:
                values[metric_key(rule)] = value
        self.baseline.update(values, report.window_start)
