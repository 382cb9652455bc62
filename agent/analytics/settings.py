"""Config sections of the analytics stage: tracker, differential privacy, baseline, alert rules.

They plug into ``AnalyticsConfig`` (agent/config.py) as ``analytics.tracker``, ``analytics.dp``,
``analytics.baseline`` and ``analytics.alerts``. Thresholds are written in natural units
(a share 0..1, valence -1..1, a people count); the engine compares integers (per-mille).
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from agent.emotions import EMOTIONS
from agent.settings_base import Section


class TrackerConfig(Section):
    """How faces are followed across frames; tracks live only in memory."""

    iou_threshold: float = Field(
        0.3,
        gt=0,
        le=1,
        title="Least overlap (IoU) with the predicted box that continues a track",
        description="A face overlapping where the track was predicted by this much is accepted "
        "even outside the gate.",
    )
    max_centre_distance: float = Field(
        1.0,
        ge=0,
        le=5,
        title="Gate at zero elapsed time, in face widths",
        description="Distance from the predicted centre always accepted (detector jitter, "
        "a change of pace).",
    )
    max_speed: float = Field(
        12.5,
        ge=0,
        le=100,
        title="Fastest a face is assumed to move, in face widths per second",
        description="The gate grows by this much per second since the face was last seen. 12.5 = "
        "2.5 face widths per frame at 5 fps (a brisk walk close to the camera). Also the speed "
        "bound under which two tracks may be one person (docs/analytics.md).",
    )
    forget_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        title="Seconds after a face leaves before its track is forgotten",
        description="Long enough to bridge detector misses and brief occlusions.",
    )
    max_tracks: int = Field(
        64,
        ge=1,
        le=10_000,
        title="Most live tracks kept in memory",
        description="Beyond it the track seen least recently is dropped, so memory stays bounded.",
    )
    min_frames: int = Field(
        3,
        ge=1,
        le=100,
        title="Frames a track needs before it counts as a person",
        description="One- and two-frame detector false positives never count.",
    )
    threshold: float = Field(
        0.55,
        gt=0,
        lt=1,
        title="Median detection score a track needs to count as a person",
        description="Distinct from vision.min_detection_score, which admits single detections: "
        "a track counts only once the median of its scores reaches this (as Frigate's threshold).",
    )
    still_tolerance: float = Field(
        0.1,
        gt=0,
        le=5,
        title="Movement, in face widths, that proves a face is not a picture",
        description="Of the smoothed centre. A track counts only once its face moved this far. "
        "Above the jitter measured on a printed face (0.034), below a person's head movements.",
    )
    static_seconds: float = Field(
        10.0,
        gt=0,
        le=86_400,
        title="Seconds still after which a face that had moved stops counting",
        description="Such a face counts toward neither k nor the votes; health names its grid cell "
        "once it has been still 10 minutes.",
    )
    grid: int = Field(
        4,
        ge=1,
        le=16,
        title="Grid (n x n) in which health locates static faces",
        description="Coarse on purpose: enough to draw a privacy zone, too coarse to follow anyone.",
    )


class DpConfig(Section):
    """Optional differential privacy: discrete Laplace noise on per-window counts."""

    enabled: bool = Field(
        False,
        title="Add noise to the published counts",
        description="Discrete Laplace noise on every per-window count, under a daily epsilon budget.",
    )
    epsilon_per_window: float = Field(
        0.5,
        gt=0,
        le=10,
        title="Privacy loss (epsilon) spent by one window",
        description="Smaller means more noise: each count gets variance 2p/(1-p)^2, p = exp(-epsilon).",
    )
    daily_budget: float = Field(
        10.0,
        gt=0,
        le=1000,
        title="Epsilon a device may spend per UTC day",
        description="When spent, windows publish no breakdown until 00:00 UTC.",
    )

    @model_validator(mode="after")
    def _budget_covers_one_window(self) -> DpConfig:
        if self.daily_budget < self.epsilon_per_window:
            raise ValueError(
                f"analytics.dp.daily_budget ({self.daily_budget}) is below "
                f"analytics.dp.epsilon_per_window ({self.epsilon_per_window}): no window could "
                "ever be published; raise the budget or lower epsilon"
            )
        return self


class BaselineConfig(Section):
    """The rolling per-hour-of-week baseline that baseline-mode alert rules compare to."""

    timezone: str = Field(
        "UTC", title="Time zone of the site", description="IANA name, e.g. Europe/Paris; sets hour-of-week."
    )
    min_samples: int = Field(
        30,
        ge=2,
        le=100_000,
        title="Windows an hour-of-week slot needs before it can alert",
        description="Until then baseline-mode rules stay silent for that hour of the week.",
    )
    max_samples: int = Field(
        600,
        ge=2,
        le=1_000_000,
        title="Memory of the rolling baseline, in windows per slot",
        description="A slot uses its newest days until they hold this many windows (and none "
        "older than retention.stats_days).",
    )
    min_stdev: float = Field(
        0.02,
        gt=0,
        le=1000,
        title="Floor of the standard deviation used in z-scores",
        description="In the metric's natural units (a share, a valence, people): a flat baseline "
        "cannot turn a tiny change into a huge z-score.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Paris") from exc
        return value

    @model_validator(mode="after")
    def _order(self) -> BaselineConfig:
        if self.max_samples < self.min_samples:
            raise ValueError(
                f"analytics.baseline.max_samples ({self.max_samples}) must be at least "
                f"min_samples ({self.min_samples})"
            )
        return self


Metric = Literal["share", "valence", "arousal", "people"]


class AlertRuleConfig(Section):
    """One rule over window statistics; raised and cleared events, never per person."""

    name: str = Field(
        ...,
        pattern=r"^[a-z0-9_-]{1,48}$",
        title="Rule name",
        description="Lower-case letters, digits, - and _; unique; carried in every event of the rule.",
    )
    metric: Metric = Field(
        ...,
        title="What is measured",
        description="share: per-mille of the voters with one of labels; valence, arousal: mean × 1000 "
        "on the circumplex; people: people counted in the window.",
    )
    labels: tuple[str, ...] = Field(
        (),
        max_length=len(EMOTIONS),
        title="Labels whose votes are summed",
        description="Metric share only, e.g. [angry, fear].",
    )
    comparison: Literal["above", "below"] = Field(
        "above",
        title="Direction",
        description="above: raise when the value is strictly above the threshold; below: strictly below.",
    )
    mode: Literal["absolute", "baseline"] = Field(
        "absolute",
        title="What the threshold is compared to",
        description="absolute: the value itself; baseline: its z-score against this device's rolling "
        "hour-of-week baseline (analytics.baseline).",
    )
    threshold: float = Field(
        ...,
        ge=-1_000,
        le=1_000_000,
        title="Raise threshold",
        description="absolute: share 0..1, valence/arousal -1..1, people a count; baseline: a z-score.",
    )
    clear_threshold: float | None = Field(
        None,
        ge=-1_000,
        le=1_000_000,
        title="Clear threshold (hysteresis)",
        description="The alert clears once the value is back past it; defaults to threshold.",
    )
    min_people: int = Field(
        1,
        ge=1,
        le=100_000,
        title="Fewest people a window needs to be judged",
        description="Windows with fewer people (or no breakdown) neither raise nor hold the alert.",
    )
    windows_in_row: int = Field(
        1, ge=1, le=1000, title="Windows in a row that must match to raise", description="1 raises at once."
    )
    clear_windows: int = Field(
        1,
        ge=1,
        le=1000,
        title="Windows in a row past the clear threshold to clear",
        description="Unjudged windows count as past clear.",
    )
    cooldown_seconds: int = Field(
        0,
        ge=0,
        le=7 * 86_400,
        title="Least time between two raises of this rule",
        description="Measured between the ends of the raising windows; 0 for none.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlertRuleConfig:
        problems = verify_rule_labels(self) + verify_rule_hysteresis(self)
        problems = problems or verify_rule_reachable(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def verify_rule_labels(rule: AlertRuleConfig) -> list[str]:
    unknown = [x for x in rule.labels if x not in EMOTIONS]
    if unknown:
        return [f"alert {rule.name}: unknown label(s) {unknown}; allowed: {list(EMOTIONS)}"]
    if rule.metric == "share" and not rule.labels:
        return [f"alert {rule.name}: metric share needs labels, e.g. [angry, fear]"]
    if rule.metric != "share" and rule.labels:
        return [f"alert {rule.name}: labels are used only with metric share (found metric {rule.metric})"]
    if rule.metric == "share" and rule.mode == "absolute" and not 0 <= rule.threshold <= 1:
        return [f"alert {rule.name}: a share threshold is a fraction 0..1 (found {rule.threshold})"]
    return []


_RANGE_MILLI: dict[str, tuple[int, int]] = {
    "share": (0, 1000), "valence": (-1000, 1000), "arousal": (-1000, 1000),
}
"""What an absolute share, valence or arousal can be, in the engine's integers (× 1000)."""


def verify_rule_reachable(rule: AlertRuleConfig) -> list[str]:
    """An absolute threshold at or past the end of its metric's range: no window can match it
    (a window matches strictly above or below), so the rule would never raise. Compared in the
    engine's integers (``agent.analytics.alerts``: threshold × 1000 rounded; people as counted,
    and only windows with at least ``min_people`` people are judged)."""
    if rule.mode != "absolute":
        return []
    t, above = rule.threshold, rule.comparison == "above"
    never = f"(threshold {t}, comparison {rule.comparison}"
    if rule.metric == "people":
        if not above and round(t) <= rule.min_people:
            return [
                f"alert {rule.name}: people is never below {rule.min_people} in a judged window "
                f"{never}; min_people {rule.min_people}), so the rule can never raise; "
                "use a threshold above min_people"
            ]
        return []
    low, high = _RANGE_MILLI[rule.metric]
    if rule.metric != "share" and not low <= t * 1000 <= high:
        article = "an" if rule.metric == "arousal" else "a"
        return [f"alert {rule.name}: {article} {rule.metric} threshold is -1..1 (found {t})"]
    at = round(t * 1000)
    if (at >= high) if above else (at <= low):
        end = high // 1000 if above else low // 1000
        return [
            f"alert {rule.name}: {rule.metric} is never {rule.comparison} {end} {never}), "
            f"so the rule can never raise; use a threshold strictly between {low // 1000} and "
            f"{high // 1000} (to 3 decimals)"
        ]
    return []


def verify_rule_hysteresis(rule: AlertRuleConfig) -> list[str]:
    clear = rule.clear_threshold
    if clear is None:
        return []
    if rule.comparison == "above" and clear > rule.threshold:
        return [
            f"alert {rule.name}: clear_threshold ({clear}) must not be above threshold "
            f"({rule.threshold}) for comparison above"
        ]
    if rule.comparison == "below" and clear < rule.threshold:
        return [
            f"alert {rule.name}: clear_threshold ({clear}) must not be below threshold "
            f"({rule.threshold}) for comparison below"
        ]
    return []


def _unique_names(rules: list[AlertRuleConfig]) -> list[AlertRuleConfig]:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"alert rule name {rule.name!r} is used twice; names must be unique")
        seen.add(rule.name)
    return rules


AlertRules = Annotated[list[AlertRuleConfig], AfterValidator(_unique_names)]
"""The ``analytics.alerts`` list: rule names are unique (events carry them)."""


class AnalyticsConfig(Section):
    window_seconds: int = Field(
        60, ge=10, le=3600, title="Window length (s), aligned to the clock",
        description="Statistics are published once per window; windows start on multiples of it.",
    )
    min_people: int = Field(
        5, ge=2, le=1000, title="k: fewest people a published breakdown may describe",
        description="A window with fewer distinct people publishes no breakdown (see small_window).",
    )
    small_window: Literal["suppress", "merge"] = Field(
        "suppress",
        title="What a window with fewer than k people does",
        description="suppress: publish frame figures only, no people count and no breakdown; "
        "merge: carry the people into the next window until k is reached (docs/analytics.md).",
    )
    differencing: Literal["withhold", "merge", "off"] = Field(
        "withhold",
        title="What a window whose people differ from the last published one's by fewer than k does",
        description="withhold: publish no breakdown (suppressed: differencing); merge: carry its "
        "people into the next window; off: publish (only sensible with dp on, which turns it off).",
    )
    health_period_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86_400,
        title="Period over which health figures that vary with the number of faces are aggregated",
        description="inference time, fps, drops, gating counters, temperature and static-face cells "
        "are published once per period, for the period before, from the windows that published "
        "their frame figures only (docs/analytics.md).",
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, title="Face tracking",
        description="How faces are followed across frames, so a person votes once per window.",
    )
    dp: DpConfig = Field(
        default_factory=DpConfig, title="Differential privacy (off by default)",
        description="Discrete Laplace noise on counts under a daily epsilon budget.",
    )
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig, title="Alert baseline",
        description="The rolling per-hour-of-week normal that baseline alert rules compare to.",
    )
    alerts: AlertRules = Field(
        default_factory=list, title="Alert rules", max_length=64,
        description="Rules over window statistics, raised and cleared with hysteresis; at most 64.",
    )
