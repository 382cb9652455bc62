"""Health figures: rolling fps and inference time, drops, camera state, CPU temperature."""

from __future__ import annotations

from pathlib import Path

from agent.analytics.health import HealthMeter, read_cpu_temp_c
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
