"""The alert baseline keeps days, not a fading sum: nothing past retention.stats_days is used
or kept (before, the file kept every window it ever folded in, whatever stats_days said)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.analytics.baseline import Baseline
from agent.analytics.settings import BaselineConfig
from agent.clock import FakeClock
from agent.config import load_config
from agent.errors import PayloadError
from agent.service import Service
from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, write_config

MONDAY_NINE = 1_700_438_400 + 9 * 3600  # 2023-11-20 09:00 UTC
WEEK = 7 * 86_400
KEY = "share:angry"


def old_format(slots: dict[str, list[float]]) -> dict[str, object]:
    """The file as written before 2026-12-06: [windows, mean, variance] per slot, undated."""
    return {"version": 1, "timezone": "UTC", "metrics": {KEY: slots}}


def fold(baseline: Baseline, values: list[int], t: float) -> None:
    for i, v in enumerate(values):
        baseline.update({KEY: v}, t + 60 * i)


def test_a_slot_combines_its_days_exactly_as_one_pass_would(tmp_path: Path) -> None:
    """Three Mondays at 09:00, four windows each: the mean and (population) deviation of all
    twelve windows, as a single Welford pass gives them."""
    b = Baseline(tmp_path, BaselineConfig(min_samples=4, max_samples=100), keep_days=30)
    values = [[100, 300, 100, 300], [200, 200, 400, 0], [150, 250, 50, 350]]
    for week, vs in enumerate(values):
        fold(b, vs, MONDAY_NINE + week * WEEK)
    flat = [v for vs in values for v in vs]
    mean = sum(flat) / len(flat)
    stdev = (sum((v - mean) ** 2 for v in flat) / len(flat)) ** 0.5
    reread = Baseline(tmp_path, BaselineConfig(min_samples=4, max_samples=100))
    stats = reread.stats(KEY, MONDAY_NINE + 2 * WEEK)
    assert stats is not None
    assert (stats.n, round(stats.mean, 9), round(stats.stdev, 9)) == (12, round(mean, 9), round(stdev, 9))


def test_days_past_stats_days_are_not_used_and_are_purged(tmp_path: Path) -> None:
    b = Baseline(tmp_path, BaselineConfig(min_samples=2, max_samples=100), keep_days=10)
    fold(b, [100, 100], MONDAY_NINE)
    fold(b, [300, 300], MONDAY_NINE + 2 * WEEK)
    later = MONDAY_NINE + 2 * WEEK + 60
    stats = b.stats(KEY, later)  # the first Monday is 14 days old: not used, even before a purge
    assert stats is not None
    assert (stats.n, stats.mean) == (2, 300.0)
    assert b.purge(later) == 1
    kept = json.loads((tmp_path / Baseline.FILE_NAME).read_text())["metrics"][KEY]
    assert [bucket[0] for bucket in kept[str(b.slot(MONDAY_NINE))]] == [(MONDAY_NINE + 2 * WEEK) // 86_400]
    assert b.purge(later) == 0


def test_max_samples_keeps_the_newest_days(tmp_path: Path) -> None:
    b = Baseline(tmp_path, BaselineConfig(min_samples=2, max_samples=3), keep_days=365)
    fold(b, [0, 0, 0], MONDAY_NINE)
    fold(b, [600, 600, 600], MONDAY_NINE + WEEK)
    stats = b.stats(KEY, MONDAY_NINE + WEEK)
    assert stats is not None
    assert (stats.n, stats.mean) == (3, 600.0)


def test_a_baseline_of_the_old_format_is_read_and_dated_by_its_file(tmp_path: Path) -> None:
    path = tmp_path / Baseline.FILE_NAME
    path.write_text(json.dumps(old_format({"9": [4, 200.0, 10_000.0]})))
    written = MONDAY_NINE - 86_400
    os.utime(path, (written, written))
    b = Baseline(tmp_path, BaselineConfig(min_samples=4, max_samples=100), keep_days=30)
    stats = b.stats(KEY, MONDAY_NINE)
    assert stats is not None
    assert (stats.n, stats.mean, stats.stdev) == (4, 200.0, 100.0)
    assert b.purge(written + 31 * 86_400) == 1


def test_a_deeply_nested_baseline_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / Baseline.FILE_NAME).write_text("[" * 100_000)  # RecursionError was a traceback
    said = r"alert_baseline\.json: cannot read the alert baseline \(JSON nested too deeply\)"
    with pytest.raises(PayloadError, match=said):
        Baseline(tmp_path, BaselineConfig())


def test_the_service_purges_statistics_older_than_stats_days_at_start(tmp_path: Path) -> None:
    """A baseline last written 40 days ago, retention.stats_days 1: gone after the first step."""
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + "retention: {stats_days: 1}\n")
    now = 1_800_000_000.0
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    baseline = state / Baseline.FILE_NAME
    baseline.write_text(json.dumps(old_format({"0": [3, 120.0, 4.0]})))
    os.utime(baseline, (now - 40 * 86_400, now - 40 * 86_400))
    pipeline = CountingPipeline()
    service = Service(
        load_config(path), path, FakeClock(start=now),
        opener=lambda s, o, c: ScriptedSource(c, 10, False),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    service.step()  # the start-up retention run
    service.close()
    assert json.loads(baseline.read_text())["metrics"] == {}
