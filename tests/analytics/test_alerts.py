"""Alert rules fire and clear exactly as written: streaks, hysteresis, cooldown, baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.analytics.alerts import AlertEngine, metric_value
from agent.analytics.anonymity import mean_valence_arousal, shares_per_mille
from agent.analytics.baseline import Baseline
from agent.analytics.settings import AlertRuleConfig, BaselineConfig
from agent.analytics.windows import WindowReport
from agent.config import parse_config
from agent.emotions import EMOTIONS
from agent.errors import ConfigError

MONDAY = 1_700_438_400  # 2023-11-20 00:00 UTC, a Monday


def report(angry: int, calm: int, start: int, suppressed: str | None = None) -> WindowReport:
    """A 60 s window with ``angry`` angry voters and ``calm`` neutral ones."""
    votes = dict.fromkeys(EMOTIONS, 0) | {"angry": angry, "neutral": calm}
    va = mean_valence_arousal(votes)
    shown = suppressed is None
    return WindowReport(
        window_start=start,
        window_end=start + 60,
        covers_from=start,
        complete=True,
        k=5,
        suppressed=suppressed,  # type: ignore[arg-type]
        people=angry + calm if shown else None,
        votes=votes if shown else None,
        shares_pm=shares_per_mille(votes) if shown else None,
        abstained=None,
        valence_milli=va[0] if va and shown else None,
        arousal_milli=va[1] if va and shown else None,
        frames_captured=300,
        frames_analysed=300,
        frames_dropped=0,
        lifetime_count=300,
        lifetime_max_ms=30,
        lifetime_p99_ms=25,
        noise=False,
    )


def rule(**kw: object) -> AlertRuleConfig:
    base: dict[str, object] = {"name": "tense", "metric": "share", "labels": ["angry"], "threshold": 0.4}
    return AlertRuleConfig.model_validate(base | kw)


def run(engine: AlertEngine, shares_of_10: list[int | None], start: int = MONDAY) -> list[tuple[int, str]]:
    """Feed windows of 10 voters with the given angry counts (None = suppressed); (index, state)."""
    out = []
    for i, angry in enumerate(shares_of_10):
        r = (
            report(0, 0, start + 60 * i, "below_k")
            if angry is None
            else report(angry, 10 - angry, start + 60 * i)
        )
        out += [(i, e.state) for e in engine.evaluate(r)]
    return out


def test_share_metric_is_per_mille_of_the_voters() -> None:
    assert metric_value(report(3, 7, MONDAY), rule()) == 300
    assert metric_value(report(1, 2, MONDAY), rule()) == 333
    assert metric_value(report(2, 1, MONDAY), rule()) == 667
    assert metric_value(report(0, 0, MONDAY, "below_k"), rule()) is None


def test_raise_needs_windows_in_a_row_and_clears_at_the_threshold() -> None:
    engine = AlertEngine([rule(windows_in_row=2)])
    #            0  1  2  3  4  5
    events = run(engine, [5, 3, 5, 5, 5, 4])
    assert events == [(3, "raised"), (5, "cleared")]


def test_the_value_must_be_strictly_above_the_threshold() -> None:
    assert run(AlertEngine([rule()]), [4, 4, 5]) == [(2, "raised")]


def test_hysteresis_keeps_the_alert_until_the_clear_threshold() -> None:
    engine = AlertEngine([rule(clear_threshold=0.2)])
    events = run(engine, [5, 4, 3, 2, 5])
    assert events == [(0, "raised"), (3, "cleared"), (4, "raised")]


def test_clear_windows_needs_that_many_windows_past_clear() -> None:
    engine = AlertEngine([rule(clear_windows=2)])
    assert run(engine, [5, 1, 5, 1, 1]) == [(0, "raised"), (4, "cleared")]


def test_cooldown_delays_a_second_raise_until_it_has_passed() -> None:
    """Raised at window 0 (end +60 s), cleared at 1; matching again at 2, 3: cooldown 240 s."""
    engine = AlertEngine([rule(cooldown_seconds=240)])
    events = run(engine, [5, 1, 5, 5, 5, 5])
    assert events == [(0, "raised"), (1, "cleared"), (4, "raised")]


def test_min_people_and_suppressed_windows_are_not_judged() -> None:
    engine = AlertEngine([rule(min_people=12, windows_in_row=1)])
    assert run(engine, [9, 9]) == []
    engine = AlertEngine([rule(windows_in_row=2)])
    # a suppressed window breaks the raise streak, then counts as past clear
    assert run(engine, [5, None, 5, 5, None]) == [(3, "raised"), (4, "cleared")]


def test_below_comparison_on_valence() -> None:
    engine = AlertEngine(
        [
            rule(
                name="gloom",
                metric="valence",
                labels=[],
                comparison="below",
                threshold=-0.5,
                clear_threshold=-0.2,
            )
        ]
    )
    # angry (99°) has valence -156: all angry -> -156 is not below -500; use sad people instead
    sad = dict.fromkeys(EMOTIONS, 0) | {"sad": 10}
    r = report(0, 10, MONDAY)
    gloomy = WindowReport(
        **{
            **{f: getattr(r, f) for f in r.__dataclass_fields__},
            "votes": sad,
            "valence_milli": mean_valence_arousal(sad)[0],
        }
    )  # type: ignore[index]
    events = engine.evaluate(gloomy)
    assert [(e.state, e.value, e.threshold) for e in events] == [("raised", -883, -500)]
    assert [e.state for e in engine.evaluate(r)] == ["cleared"]


def test_event_body_holds_integers_and_the_rule_name_only() -> None:
    engine = AlertEngine([rule()])
    (event,) = engine.evaluate(report(6, 4, MONDAY))
    assert event.to_body() == {
        "rule": "tense",
        "state": "raised",
        "metric": "share:angry",
        "mode": "absolute",
        "value": 600,
        "threshold": 400,
        "z_milli": None,
        "baseline_milli": None,
        "window_start": MONDAY,
        "window_end": MONDAY + 60,
    }


def test_baseline_mode_learns_each_hour_of_week_and_raises_on_a_z_score(tmp_path: Path) -> None:
    settings = BaselineConfig(min_samples=4, max_samples=100, min_stdev=0.02)
    engine = AlertEngine(
        [rule(mode="baseline", threshold=3.0, clear_threshold=1.0)], baseline=Baseline(tmp_path, settings)
    )
    # Mondays 09:00: angry share alternates 10 % / 30 % (mean 200, stdev 100 per-mille)
    nine = MONDAY + 9 * 3600
    assert run(engine, [1, 3, 1, 3], start=nine) == []  # learning: no slot statistics yet
    # the same hour a week later: 50 % is z = 3.0 (not above 3), 60 % is z = 4.0
    week = nine + 7 * 86_400
    r = report(6, 4, week)
    (event,) = engine.evaluate(r)
    assert (event.state, event.value, event.z_milli, event.baseline_milli) == ("raised", 600, 4000, 200)
    # another hour of the week has its own (empty) baseline: not judged, counts as past clear
    (cleared,) = engine.evaluate(report(6, 4, week + 3600))
    assert cleared.state == "cleared"
    assert Baseline(tmp_path, settings).stats("share:angry", nine) is not None


def test_baseline_slot_is_hour_of_week_in_the_site_zone(tmp_path: Path) -> None:
    utc = Baseline(tmp_path, BaselineConfig())
    paris = Baseline(tmp_path / "p", BaselineConfig(timezone="Europe/Paris"))
    assert utc.slot(MONDAY) == 0
    assert utc.slot(MONDAY - 1) == 167
    assert paris.slot(MONDAY) == 1  # 01:00 in Paris (UTC+1 in November)


def test_baseline_rule_without_a_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="baseline mode needs a Baseline"):
        AlertEngine([rule(mode="baseline", threshold=2.0)])


def test_rule_config_errors_name_the_rule_and_the_fix() -> None:
    with pytest.raises(ValidationError, match="alert tense: metric share needs labels"):
        rule(labels=[])
    with pytest.raises(ValidationError, match=r"unknown label\(s\) \['furious'\]"):
        rule(labels=["furious"])
    with pytest.raises(ValidationError, match=r"clear_threshold \(0.5\) must not be above threshold"):
        rule(clear_threshold=0.5)
    with pytest.raises(ValidationError, match=r"a share threshold is a fraction 0..1 \(found 40.0\)"):
        rule(threshold=40)


def test_duplicate_rule_names_are_located_in_the_yaml() -> None:
    text = (
        "device_id: lobby-1\n"
        "analytics:\n"
        "  alerts:\n"
        "    - {name: tense, metric: share, labels: [angry], threshold: 0.4}\n"
        "    - {name: tense, metric: people, threshold: 20}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "agent.yaml")
    assert "analytics.alerts (agent.yaml:3): alert rule name 'tense' is used twice" in str(info.value)


def test_a_reload_keeps_unchanged_rules_and_clears_changed_ones_that_were_raised() -> None:
    kept, changed = rule(name="kept"), rule(name="changed", windows_in_row=1)
    old = AlertEngine([kept, changed, rule(name="idle", threshold=0.9)])
    assert [e.rule for e in old.evaluate(report(6, 4, MONDAY))] == ["kept", "changed"]
    new = AlertEngine([kept, rule(name="changed", windows_in_row=3)])
    events = new.take_over(old, at=MONDAY + 90)
    assert [(e.rule, e.state, e.value, e.threshold, e.window_end) for e in events] == [
        ("changed", "cleared", None, 400, MONDAY + 90)
    ]
    assert new.active() == ["kept"]
    # the kept rule is still raised: a calm window clears it, a raise would need 3 windows
    assert [(e.rule, e.state) for e in new.evaluate(report(1, 9, MONDAY + 60))] == [("kept", "cleared")]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"threshold": 1.0}, "alert tense: share is never above 1 (threshold 1.0, comparison above)"),
        ({"threshold": 0.9996}, "alert tense: share is never above 1 (threshold 0.9996, comparison above)"),
        ({"threshold": 0.0, "comparison": "below"}, "share is never below 0 (threshold 0.0"),
        ({"metric": "valence", "labels": [], "threshold": 5}, "a valence threshold is -1..1 (found 5.0)"),
        ({"metric": "arousal", "labels": [], "threshold": -2, "comparison": "below"},
         "an arousal threshold is -1..1 (found -2.0)"),
        ({"metric": "valence", "labels": [], "threshold": 1}, "valence is never above 1 (threshold 1.0"),
        ({"metric": "arousal", "labels": [], "threshold": -1, "comparison": "below"},
         "arousal is never below -1 (threshold -1.0"),
        ({"metric": "people", "labels": [], "threshold": 0, "comparison": "below"},
         "people is never below 1 in a judged window (threshold 0.0, comparison below; min_people 1)"),
        ({"metric": "people", "labels": [], "threshold": 3, "comparison": "below", "min_people": 5},
         "people is never below 5 in a judged window (threshold 3.0, comparison below; min_people 5)"),
    ],
)
def test_a_rule_that_can_never_raise_is_refused(kw: dict[str, object], message: str) -> None:
    """An absolute threshold at or past the end of its metric's range never matches (a window
    matches strictly above / below it): the rule was accepted and stayed silent for ever."""
    with pytest.raises(ValidationError) as info:
        rule(**kw)
    assert message in str(info.value)
    assert "is never" not in message or "can never raise" in str(info.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"threshold": 0.999},
        {"threshold": 0.001, "comparison": "below"},
        {"metric": "valence", "labels": [], "threshold": 0.99},
        {"metric": "arousal", "labels": [], "threshold": -0.99, "comparison": "below"},
        {"metric": "people", "labels": [], "threshold": 2, "comparison": "below"},
        {"metric": "people", "labels": [], "threshold": 6, "comparison": "below", "min_people": 5},
        {"mode": "baseline", "threshold": 3.0},
        {"mode": "baseline", "threshold": -3.0, "comparison": "below"},
    ],
)
def test_a_rule_that_can_raise_is_accepted(kw: dict[str, object]) -> None:
    assert rule(**kw).name == "tense"


def test_a_rule_that_can_never_raise_is_refused_by_check_config_naming_the_key() -> None:
    text = "device_id: a\nanalytics:\n  alerts:\n    - {name: glum, metric: valence, threshold: 2}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "agent.yaml")
    assert "analytics.alerts.0 (agent.yaml:4): alert glum: a valence threshold is -1..1 (found 2.0)" in str(
        info.value
    )
