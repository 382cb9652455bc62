"""Every rule's current state, for the retained ``alert/<rule>`` topic: known at start, after each
transition and across a reload."""

from __future__ import annotations

from agent.analytics.alerts import AlertEngine, AlertState
from tests.analytics.test_alerts import MONDAY, report, rule


def test_at_start_every_rule_is_cleared_with_no_known_transition() -> None:
    engine = AlertEngine([rule(name="a"), rule(name="b", threshold=0.9)])
    assert engine.states() == [AlertState("a", "cleared", None), AlertState("b", "cleared", None)]
    assert engine.states()[0].to_body() == {"rule": "a", "state": "cleared", "since": None}


def test_a_raise_and_its_clear_move_the_state_and_its_since() -> None:
    engine = AlertEngine([rule(name="a", windows_in_row=1), rule(name="calm", threshold=0.9)])
    (event,) = engine.evaluate(report(8, 2, MONDAY))
    assert event.as_state() == AlertState("a", "raised", MONDAY + 60)
    assert engine.states() == [AlertState("a", "raised", MONDAY + 60), AlertState("calm", "cleared", None)]
    (event,) = engine.evaluate(report(0, 10, MONDAY + 60))
    assert engine.states()[0] == event.as_state() == AlertState("a", "cleared", MONDAY + 120)


def test_a_reload_keeps_an_unchanged_rules_state_and_starts_a_new_rule_cleared() -> None:
    old = AlertEngine([rule(name="a", windows_in_row=1)])
    old.evaluate(report(8, 2, MONDAY))
    new = AlertEngine([rule(name="a", windows_in_row=1), rule(name="new")])
    assert new.take_over(old, at=MONDAY + 90) == []
    assert new.states() == [AlertState("a", "raised", MONDAY + 60), AlertState("new", "cleared", None)]


def test_a_removed_raised_rule_is_cleared_by_the_reload() -> None:
    old = AlertEngine([rule(name="a", windows_in_row=1)])
    old.evaluate(report(8, 2, MONDAY))
    (event,) = AlertEngine([]).take_over(old, at=MONDAY + 90)
    assert event.as_state() == AlertState("a", "cleared", MONDAY + 90)
