"""Health figures: rolling fps and inference time, drops, camera state, CPU temperature."""

from __future__ import annotations

from pathlib import Path

from agent.analytics.health import HealthMeter, HealthPeriods, read_cpu_temp_c
from agent.analytics.windows import StageLoad, WindowReport
from agent.clock import FakeClock


def test_fps_and_inference_are_over_the_horizon(clock: FakeClock, tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.write_text("48312\n")
    meter = HealthMeter(clock, temp_path=temp, horizon_s=10.0)
    for i in range(80):  # 20 s at 4 fps; inference 10 ms, then 30 ms for the last 10 s
        clock.advance(0.25)
        meter.frame(10.0 if i < 40 else 30.0)
    meter.dropped(3)
    meter.camera("up")
    figures = meter.figures()
    assert figures.fps == 4.0
    assert figures.inference_ms == 30.0
    assert figures.to_body() == {
        "fps_milli": 4000,
        "inference_ms": 30,
        "drops": 3,
        "camera": "up",
        "uptime_s": 20,
        "cpu_temp_mc": 48312,
    }


def test_fps_in_the_first_seconds_uses_the_time_since_start(clock: FakeClock, tmp_path: Path) -> None:
    meter = HealthMeter(clock, temp_path=tmp_path / "none")
    for _ in range(4):
        clock.advance(0.5)
        meter.frame(12.0)
    assert meter.figures().fps == 2.0


def test_a_board_without_thermal_zone_reports_none(tmp_path: Path) -> None:
    assert read_cpu_temp_c(tmp_path / "missing") is None
    bad = tmp_path / "bad"
    bad.write_text("hot\n")
    assert read_cpu_temp_c(bad) is None
    ok = tmp_path / "ok"
    ok.write_text("61000\n")
    assert read_cpu_temp_c(ok) == 61.0


def test_no_frames_gives_zero_fps_and_no_temperature_body(clock: FakeClock, tmp_path: Path) -> None:
    body = HealthMeter(clock, temp_path=tmp_path / "missing").figures().to_body()
    assert body == {
        "fps_milli": 0,
        "inference_ms": 0,
        "drops": 0,
        "camera": "starting",
        "uptime_s": 0,
        "cpu_temp_mc": None,
    }


def window(end: int, suppressed: str | None = None, *, noise: bool = False, ms: float = 60.0,
           drops: int = 2, cells: frozenset[str] = frozenset({"B2"})) -> WindowReport:
    """A 10 s window ending at ``end`` with 20 analysed frames that took ``ms`` in all."""
    return WindowReport(
        window_start=end - 10, window_end=end, covers_from=end - 10, complete=True, k=5,
        suppressed=suppressed, people=None, votes=None, shares_pm=None, abstained=None,
        valence_milli=None, arousal_milli=None, frames_captured=22, frames_analysed=20,
        frames_dropped=drops, lifetime_count=20, lifetime_max_ms=9, lifetime_p99_ms=9, noise=noise,
        load=StageLoad(vision_ms=ms, overloaded=drops, detector_skipped=3, emotion_reused=4,
                       budget_dropped=1, static_cells=cells),
    )


LIVE = {"camera": "up", "fps_milli": 4000, "inference_ms": 99, "drops": 50, "cpu_temp_mc": 61000}


def test_a_period_holds_the_figures_of_the_windows_that_showed_their_frames() -> None:
    periods = HealthPeriods(60)
    assert periods.publishable(LIVE, 5, window(5))["inference_ms"] is None  # no period ended yet
    periods.publishable(LIVE, 15, window(15, ms=100.0))
    periods.publishable(LIVE, 25, window(25, "below_k", ms=900.0, drops=40, cells=frozenset({"A1"})))
    body = periods.publishable({**LIVE, "cpu_temp_mc": 70000}, 60, window(60))
    assert body["period_end"] == 60
    assert body["inference_ms"] == round(160.0 / 40)  # the two shown windows' 40 frames
    assert body["fps_milli"] == 2000  # 40 frames over their 20 s
    assert (body["drops"], body["detector_skipped"], body["emotion_reused"], body["budget_dropped"]) == (
        4, 6, 8, 2)
    assert body["static_faces"] == ["B2"]
    assert body["cpu_temp_mc"] == 61000  # read as the last shown window of the period closed
    assert body["camera"] == "up"  # live: it does not vary with the faces


def test_a_period_of_suppressed_windows_holds_the_same_whatever_they_held() -> None:
    def run(ms: float, drops: int, cells: frozenset[str]) -> list[dict[str, object]]:
        periods = HealthPeriods(60)
        periods.publishable(LIVE, 5, window(5))  # counters before: a period shown earlier
        out = [periods.publishable(LIVE, 60, window(60, "below_k"))]
        for end, why in ((70, "below_k"), (80, "below_k"), (90, "differencing"), (120, "merged")):
            out.append(periods.publishable(LIVE, end, window(end, why, ms=ms, drops=drops, cells=cells)))
        return out

    empty, crowded = run(0.0, 0, frozenset()), run(3000.0, 80, frozenset({"A1", "C3"}))
    assert crowded == empty
    assert empty[-1]["period_end"] == 120
    assert (empty[-1]["inference_ms"], empty[-1]["static_faces"], empty[-1]["cpu_temp_mc"]) == (None,) * 3
    assert empty[-1]["drops"] == 2  # the totals stand where the last shown window left them


def test_with_noise_a_window_shows_no_figures_and_a_reload_keeps_the_totals() -> None:
    periods = HealthPeriods(60)
    periods.publishable(LIVE, 5, window(5))
    periods.publishable(LIVE, 15, window(15, noise=True, drops=30))
    retuned = periods.retuned(120)
    assert retuned.publishable(LIVE, 20, window(20))["drops"] is None  # held figures start empty
    body = retuned.publishable(LIVE, 130, None)
    assert body["drops"] == 4  # 2 before the reload, 2 after; the noisy window's 30 never count
    assert body["inference_ms"] == 3
