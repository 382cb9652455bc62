"""Active hours: weekdays, time zones, daylight saving, and the next instant the camera flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import parse_config
from agent.errors import ConfigError
from agent.privacy.schedule import Schedule
from agent.privacy.settings import ScheduleConfig


def sched(tz: str, **hours: list[str]) -> Schedule:
    return Schedule.from_config(ScheduleConfig(timezone=tz, hours=hours))  # type: ignore[arg-type]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_active_only_inside_the_local_hours_of_listed_weekdays() -> None:
    s = sched("Europe/Berlin", mon=["08:00-18:00"])  # 23 Nov 2026 is a Monday, CET = UTC+1
    assert not s.is_active(utc(2026, 11, 23, 6, 59, 59))
    assert s.is_active(utc(2026, 11, 23, 7, 0))
    assert s.is_active(utc(2026, 11, 23, 16, 59, 59))
    assert not s.is_active(utc(2026, 11, 23, 17, 0))
    assert not s.is_active(utc(2026, 11, 24, 10, 0))  # Tuesday is not listed


def test_the_same_hours_in_another_zone_are_other_instants() -> None:
    chicago = sched("America/Chicago", mon=["08:00-18:00"])  # CST = UTC-6
    assert not chicago.is_active(utc(2026, 11, 23, 7, 30))
    assert chicago.is_active(utc(2026, 11, 23, 14, 0))
    assert chicago.is_active(utc(2026, 11, 23, 23, 59))
    assert not chicago.is_active(utc(2026, 11, 24, 0, 0))


def test_summer_time_shifts_the_utc_hours() -> None:
    s = sched("Europe/Berlin", mon=["08:00-18:00"], wed=["08:00-18:00"])
    assert s.is_active(utc(2026, 7, 6, 6, 0))  # Monday in July: 08:00 CEST
    assert not s.is_active(utc(2026, 11, 23, 6, 0))  # Monday in November: 07:00 CET


def test_next_change_is_the_close_then_the_next_open() -> None:
    s = sched("Europe/Berlin", mon=["08:00-18:00"])
    first = s.next_change(utc(2026, 11, 23, 7, 30))
    assert first == utc(2026, 11, 23, 17, 0)
    assert s.next_change(first) == utc(2026, 11, 30, 7, 0)


def test_midnight_between_two_ranges_is_not_a_change() -> None:
    s = sched("Europe/Berlin", mon=["20:00-24:00"], tue=["00:00-06:00"])
    assert s.is_active(utc(2026, 11, 23, 23, 0))  # Tuesday 00:00 local
    assert s.next_change(utc(2026, 11, 23, 20, 0)) == utc(2026, 11, 24, 5, 0)


def test_a_range_starting_in_the_spring_gap_opens_when_clocks_jump() -> None:
    """29 Mar 2026: 02:00 CET jumps to 03:00 CEST at 01:00 UTC; 02:30 never exists locally."""
    s = sched("Europe/Berlin", sun=["02:30-05:00"])
    assert not s.is_active(utc(2026, 3, 29, 0, 59, 59))
    assert s.is_active(utc(2026, 3, 29, 1, 0))
    assert s.next_change(utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 0)
    assert s.next_change(utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 29, 3, 0)  # 05:00 CEST


def test_the_repeated_autumn_hour_is_active_twice() -> None:
    """25 Oct 2026: local 02:00-03:00 happens at 00:00 UTC (CEST) and again at 01:00 UTC (CET)."""
    s = sched("Europe/Berlin", sun=["02:00-02:30"])
    changes = [utc(2026, 10, 24, 23, 0)]
    for _ in range(4):
        nxt = s.next_change(changes[-1])
        assert nxt is not None
        changes.append(nxt)
    assert changes[1:] == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30),
                           utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 30)]


def test_naive_datetimes_are_refused() -> None:
    s = sched("UTC", mon=["08:00-18:00"])
    with pytest.raises(ValueError, match="timezone-aware"):
        s.is_active(datetime(2026, 11, 23, 8, 0))


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]
RANGE = st.tuples(st.integers(0, 47), st.integers(1, 48)).filter(lambda r: r[0] < r[1]).map(
    lambda r: f"{r[0] // 2:02d}:{r[0] % 2 * 30:02d}-{r[1] // 2:02d}:{r[1] % 2 * 30:02d}")


@settings(max_examples=25, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    hours=st.dictionaries(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                          st.lists(RANGE, min_size=1, max_size=1), min_size=1),
    start=st.datetimes(datetime(2026, 3, 1), datetime(2026, 11, 30)).map(lambda d: d.replace(tzinfo=UTC)),
)
def test_next_change_matches_a_minute_by_minute_scan(tz: str, hours: dict[str, list[str]],
                                                     start: datetime) -> None:
    s = sched(tz, **hours)
    state = s.is_active(start)
    t = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    expected = None
    for _ in range(8 * 24 * 60):  # every boundary and DST jump here falls on a whole minute
        if s.is_active(t) != state:
            expected = t
            break
        t += timedelta(minutes=1)
    assert s.next_change(start) == expected


@pytest.mark.parametrize(("schedule", "message"), [
    ({"timezone": "Europe/Berln", "hours": {"mon": ["08:00-18:00"]}},
     "unknown IANA time zone 'Europe/Berln'"),
    ({"timezone": "UTC", "hours": {"mon": ["8-18"]}}, "mon: '8-18' is not a time range HH:MM-HH:MM"),
    ({"timezone": "UTC", "hours": {"tue": ["18:00-08:00"]}}, "tue: '18:00-08:00' must end after it starts"),
    ({"timezone": "UTC", "hours": {"wed": ["08:00-12:00", "11:00-13:00"]}}, "wed: time ranges overlap"),
    ({"timezone": "UTC", "hours": {"mon": []}}, "no active hours on any day"),
    ({"timezone": "UTC", "hours": {"monday": ["08:00-18:00"]}}, "policy.schedule.hours.monday"),
    ({"hours": {"mon": ["08:00-18:00"]}}, "policy.schedule.timezone"),
])
def test_schedule_errors_name_the_key_and_the_value(schedule: dict[str, Any], message: str) -> None:
    text = yaml.safe_dump({"device_id": "a", "policy": {"schedule": schedule}})
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert message in str(info.value)
