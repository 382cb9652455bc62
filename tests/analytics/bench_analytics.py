"""Micro-benchmarks of the analytics stage: ``.venv/bin/python tests/analytics/bench_analytics.py``.

Not a test (pytest does not collect it): it prints the cost of a tracker update, one discrete
Laplace draw from ``secrets``, and closing a window with noise on (13 draws, fsynced budget).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.analytics.dp import BudgetAccountant, DiscreteLaplace
from agent.analytics.settings import AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker
from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.clock import FakeClock
from analytics.faces import face, seeded


def tracker_us_per_frame(n_faces: int, frames: int = 2000) -> float:
    tracker = Tracker(TrackerConfig(), FakeClock(), rng=seeded(0))
    rows = [
        [face(x=0.05 + 0.9 * j / n_faces + 0.001 * (i % 5), w=0.04, h=0.04) for j in range(n_faces)]
        for i in range(frames)
    ]
    start = time.perf_counter()
    for i, faces in enumerate(rows):
        tracker.update(faces, i * 0.2)
    return (time.perf_counter() - start) / frames * 1e6


def noise_us_per_draw(eps: float, draws: int = 5000) -> float:
    noise = DiscreteLaplace()
    start = time.perf_counter()
    for _ in range(draws):
        noise.sample(eps)
    return (time.perf_counter() - start) / draws * 1e6


def window_close_ms() -> float:
    with tempfile.TemporaryDirectory() as folder:
        clock = FakeClock()
        cfg = AnalyticsConfig.model_validate(
            {"min_people": 2, "dp": {"enabled": True, "epsilon_per_window": 0.5, "daily_budget": 100}}
        )
        agg = WindowAggregator(
            cfg, clock, dp=DiscreteLaplace(), accountant=BudgetAccountant(Path(folder), 100)
        )
        tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
        for i in range(300):
            t = 1_700_000_040 + i * 0.2
            views = tracker.update([face(x=0.1 * j, w=0.05) for j in range(6)], t)
            agg.add_frame(t, views, FrameCounters(lifetimes_ms=(20.0,)))
        start = time.perf_counter()
        agg.poll(1_700_000_100.1)
        return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    for n in (1, 6, 20):
        print(f"tracker.update, {n:2d} faces/frame: {tracker_us_per_frame(n):6.0f} us/frame")
    for eps in (0.1, 0.5, 1.0):
        print(f"discrete Laplace draw, eps {eps}: {noise_us_per_draw(eps):6.0f} us")
    print(f"window close with noise (13 draws, fsynced budget): {window_close_ms():.1f} ms")
