"""Retention: with an injected clock, exactly what is due is removed, and each purge is recorded."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import parse_config
from agent.errors import ConfigError
from agent.privacy.retention import (
    DAY_S,
    DirectoryStore,
    Kind,
    RetentionEnforcer,
    StoredItem,
    due_purges,
    limits_from,
)
from agent.privacy.settings import RetentionConfig

NOW = 1_800_000_000.0
LIMITS = limits_from(RetentionConfig(spool_days=7, audit_days=365, stats_days=30))


def aged(kind: Kind, key: str, days: float, size: int = 10) -> StoredItem:
    return StoredItem(kind, key, NOW - days * DAY_S, size)


def test_planner_returns_exactly_the_items_at_or_past_their_limit() -> None:
    items = [
        aged("spool", "s-young", 7 - 1 / DAY_S),  # one second short of 7 days
        aged("spool", "s-exact", 7),
        aged("spool", "s-old", 8),
        aged("audit", "a-young", 364.9),
        aged("audit", "a-old", 400),
        aged("stats", "d-young", 29),
        aged("stats", "d-old", 31),
    ]
    due = due_purges(NOW, items, LIMITS)
    assert [i.key for i in due] == ["a-old", "d-old", "s-old", "s-exact"]


def test_planner_refuses_a_kind_without_a_limit() -> None:
    with pytest.raises(ValueError, match="no retention limit for 'frames' items"):
        due_purges(NOW, [StoredItem("frames", "x", 0.0)], LIMITS)  # type: ignore[arg-type]


class MemoryStore:
    """An honest in-memory store, as the local statistics table would be."""

    def __init__(self, kind: Kind, items: list[StoredItem]) -> None:
        self.kind: Kind = kind
        self.items = {i.key: i for i in items}

    def list_items(self) -> list[StoredItem]:
        return list(self.items.values())

    def remove(self, keys: Sequence[str]) -> int:
        return sum(self.items.pop(k, None) is not None for k in keys)


def write(folder: Path, name: str, mtime: float, size: int) -> None:
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))


def test_enforcer_purges_at_start_then_on_its_timer(tmp_path: Path) -> None:
    clock = FakeClock(start=NOW)
    audit = tmp_path / "audit"
    audit.mkdir()
    write(audit, "seg-0001.jsonl", NOW - 400 * DAY_S, 100)
    write(audit, "seg-0002.jsonl", NOW - 366 * DAY_S, 50)
    write(audit, "seg-0003.jsonl", NOW - 365 * DAY_S + 1800, 70)  # due in 30 minutes
    write(audit, "notes.txt", NOW - 999 * DAY_S, 5)  # not matched by the pattern
    stats = MemoryStore("stats", [StoredItem("stats", "2026-01-01", NOW - 10 * DAY_S)])
    cfg = RetentionConfig(audit_days=365, stats_days=30, interval_minutes=60)
    enforcer = RetentionEnforcer(cfg, [DirectoryStore("audit", audit, "seg-*.jsonl"), stats], clock)

    start = enforcer.run_if_due()  # the start-up run
    assert start is not None
    (record,) = start.records
    assert sorted(p.name for p in audit.iterdir()) == ["notes.txt", "seg-0003.jsonl"]
    assert record.as_payload() == {
        "event": "retention_purge",
        "kind": "audit",
        "ts": int(NOW * 1000),
        "limit_days": 365,
        "cutoff": int((NOW - 365 * DAY_S) * 1000),
        "count": 2,
        "bytes": 150,
        "oldest": int((NOW - 400 * DAY_S) * 1000),
        "newest": int((NOW - 366 * DAY_S) * 1000),
        "keys_sha256": hashlib.sha256(b"seg-0001.jsonl\nseg-0002.jsonl").hexdigest(),
    }
    clock.advance(59 * 60)
    assert enforcer.run_if_due() is None  # not yet time, although seg-0003 is now due
    assert (audit / "seg-0003.jsonl").exists()
    clock.advance(60)
    later_run = enforcer.run_if_due()
    assert later_run is not None
    (later,) = later_run.records
    assert (later.kind, later.count) == ("audit", 1)
    assert sorted(p.name for p in audit.iterdir()) == ["notes.txt"]
    assert list(stats.items) == ["2026-01-01"]  # 10 days old: kept
    clock.advance(21 * DAY_S)
    stat_run = enforcer.run_if_due()
    assert stat_run is not None
    (stat_purge,) = stat_run.records
    assert (stat_purge.kind, stat_purge.count, stats.items) == ("stats", 1, {})


def test_directory_store_deletes_only_plain_names(tmp_path: Path) -> None:
    store = DirectoryStore("spool", tmp_path)
    with pytest.raises(ValueError, match=re.escape("refusing to delete '../etc': not a plain file name")):
        store.remove(["../etc"])
    assert DirectoryStore("spool", tmp_path / "missing").list_items() == []


@pytest.mark.parametrize("key", ["frames_days", "frames_seconds", "frames"])
def test_frames_have_no_retention_setting(key: str) -> None:
    """Zero retention of frames is not configurable: any frames key is an unknown key, and the
    error suggests no other retention key for it (`frames_days` is no misspelt `stats_days`)."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"device_id: a\nretention:\n  {key}: 1\n", "c.yaml")
    assert info.value.problems == [
        f"retention.{key} (c.yaml:3): unknown key (found 1); remove it or check its spelling; the keys here "
        "are audit_days, interval_minutes, spool_days, stats_days"
    ]


class BrokenStore(MemoryStore):
    def list_items(self) -> list[StoredItem]:
        raise OSError("disk gone")


def test_a_failing_store_or_hook_does_not_stop_the_others() -> None:
    clock = FakeClock(start=NOW)
    good = MemoryStore("stats", [aged("stats", "old", 40)])
    calls: list[str] = []

    def failing_hook() -> object:
        raise OSError("locked")

    def quiet_hook() -> object:
        calls.append("x")
        return None

    enforcer = RetentionEnforcer(RetentionConfig(), [BrokenStore("spool", []), good], clock,
                                 hooks={"audit": failing_hook, "spool": quiet_hook})
    run = enforcer.run()
    assert run.failed == ["spool", "audit"]
    assert good.items == {}
    assert [r.count for r in run.records] == [1]
    assert calls == ["x"]
    assert run.reports == []


class SteppedClock(FakeClock):
    """A wall clock that can be set back (NTP correcting a wrong date); monotonic time goes on."""

    def step_wall(self, seconds: float) -> None:
        self._wall += seconds


def test_a_wall_clock_set_back_does_not_hold_the_purges() -> None:
    """A Pi without an RTC that started with a date 10 days ahead, then corrected by NTP: the
    timer ran on the wall clock, so no purge ran for those 10 days (found by review)."""
    clock = SteppedClock(start=NOW + 10 * DAY_S)
    stats = MemoryStore("stats", [])
    enforcer = RetentionEnforcer(RetentionConfig(stats_days=30, interval_minutes=60), [stats], clock)
    assert enforcer.run_if_due() is not None  # the start-up run, on the wrong date
    clock.step_wall(-10 * DAY_S)
    clock.advance(61 * 60)
    stats.items["2026-01-01"] = StoredItem("stats", "2026-01-01", NOW - 40 * DAY_S)
    run = enforcer.run_if_due()
    assert run is not None
    assert stats.items == {}


def test_a_reload_that_shortens_the_interval_takes_effect_from_the_last_run() -> None:
    """A reload from a daily run to an hourly one waited out the day already scheduled."""
    clock = FakeClock(start=NOW)
    enforcer = RetentionEnforcer(RetentionConfig(interval_minutes=1440), [MemoryStore("stats", [])], clock)
    assert enforcer.run_if_due() is not None
    clock.advance(30 * 60)
    enforcer.retune(RetentionConfig(interval_minutes=60))
    assert enforcer.run_if_due() is None
    clock.advance(31 * 60)
    assert enforcer.run_if_due() is not None
