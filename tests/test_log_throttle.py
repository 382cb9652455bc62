"""A flood of refused input makes a log line a minute per kind, not a line per message: 20,000
invalid commands were 20,000 journal lines (found by a hostile-input probe)."""

from __future__ import annotations

import logging

import pytest

from agent.log_throttle import Throttled


def test_the_first_is_logged_then_one_a_minute_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warn = Throttled(logging.getLogger("t"), every=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "t")
    for i in range(20_000):
        now[0] = i * 0.001  # 20 s of a flood
        warn.warning("command", "ignored an MQTT command: %s", f"bad {i}")
    warn.warning("other", "another kind is said at once")
    now[0] = 61.0
    warn.warning("command", "ignored an MQTT command: %s", "bad again")
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "ignored an MQTT command: bad 0",
        "another kind is said at once",
        "ignored an MQTT command: bad again (and 19999 more like it since the last such line)",
    ]


def test_extra_fields_reach_the_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "t")
    Throttled(logging.getLogger("t")).warning("k", "refused", extra={"fields": {"topic": "x"}})
    assert caplog.records[0].fields == {"topic": "x"}  # type: ignore[attr-defined]


def test_a_flood_of_bad_commands_is_one_line_and_every_one_counted(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from agent.transport.settings import CommandsConfig  # noqa: PLC0415
    from agent.transport.subscriptions import Subscriptions  # noqa: PLC0415

    counted: list[str] = []
    subs = Subscriptions(
        "emotion-agent/d-1", device_id="d-1", commands=CommandsConfig(), count=counted.append,
        on_command=None, cosignature_topic="emotion-agent/d-1/audit/cosignature", on_cosignature=None,
        ha_status_topic=None, on_ha_status=lambda _p: None,
    )
    caplog.set_level(logging.WARNING, "agent.transport.subscriptions")
    for i in range(2_000):
        topic = "emotion-agent/d-1/cmd/privacy_mode/set"
        msg = SimpleNamespace(topic=topic, payload=b"{bad %d" % i, retain=False)
        subs.deliver(None, None, msg)  # type: ignore[arg-type]
    assert counted == ["rejected"] * 2_000
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
