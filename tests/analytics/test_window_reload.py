"""A reload closes the open window early and the next starts where it ended: no window is
published twice (issue 18 item 2: before, window 1796457950 was published twice, complete:
false with k = 2, then complete: true with k = 3)."""

from __future__ import annotations

from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.clock import FakeClock
from agent.config import AnalyticsConfig

T0 = 1_796_457_950.0
ONE = FrameCounters(captured=1, analysed=1, lifetimes_ms=(5.0,))


def agg(clock: FakeClock, resume_at: int | None = None, **kw: object) -> WindowAggregator:
    cfg = AnalyticsConfig.model_validate({"window_seconds": 10, "min_people": 2} | kw)
    return WindowAggregator(cfg, clock, resume_at=resume_at)


def test_a_reload_mid_window_publishes_each_second_once(clock: FakeClock) -> None:
    before = agg(clock)
    for i in range(6):
        before.add_frame(T0 + i, (), ONE)
    (closed,) = before.flush(T0 + 5.4, reload=True)
    assert (closed.window_start, closed.window_end) == (1_796_457_950, 1_796_457_956)
    assert closed.complete is False
    assert closed.to_body()["closed_by"] == "reload"
    after = agg(clock, resume_at=closed.window_end, min_people=3)
    for i in range(6, 12):
        after.add_frame(T0 + i, (), ONE)
    reports = after.poll(T0 + 12)
    assert [(r.window_start, r.window_end, r.k) for r in reports] == [(1_796_457_956, 1_796_457_960, 3)]
    assert reports[0].frames_captured == 4
    assert reports[0].closed_by is None
    (nxt,) = after.flush(T0 + 20)
    assert nxt.window_start == 1_796_457_960  # back on the grid


def test_a_shutdown_flush_is_not_marked_as_a_reload(clock: FakeClock) -> None:
    a = agg(clock)
    a.add_frame(T0 + 1, (), ONE)
    (closed,) = a.flush(T0 + 3)
    assert (closed.window_end, closed.closed_by) == (1_796_457_960, None)


def test_a_reload_at_a_boundary_or_after_a_gap_leaves_the_grid_alone(clock: FakeClock) -> None:
    after = agg(clock, resume_at=1_796_457_960)
    after.add_frame(T0 + 10, (), ONE)
    (r,) = after.flush(T0 + 20)
    assert (r.window_start, r.window_end) == (1_796_457_960, 1_796_457_970)
    late = agg(clock, resume_at=1_796_457_956)
    late.add_frame(T0 + 31, (), ONE)  # the source paused: the first frame is windows later
    (r,) = late.flush(T0 + 40)
    assert r.window_start == 1_796_457_980
