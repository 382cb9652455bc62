"""The health topic's face-dependent figures come only from windows that published their frames.

A review read the hourly ``inference_ms`` as 0, 5 and 20 for 0, 1 and 4 people in an hour whose
windows were all suppressed: the hour's means and totals told what each suppressed window hid.
Here a live camera (frames on its own schedule) runs for three health periods of 60 s with
0, 1 and k - 1 faces in every frame (k = 5: every window suppressed), and with k + 1 faces
(every window published), on the harness of ``tests/test_publish_timing.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.analytics.health import FACE_DEPENDENT
from agent.vision.observation import FaceObservation
from tests import test_publish_timing
from tests.analytics.faces import face
from tests.test_publish_timing import FALLS_BEHIND_S, KEEPS_UP_S, T0, SlowerWithFaces, live_run
from tests.test_service import messages, verify_all

PERIOD_S = 60
STOP_AT = 3 * PERIOD_S + 5.13
"""Three periods have ended (at 60, 120 and 180 s): two with held figures, and the first."""


class Walking(SlowerWithFaces):
    """The same faces, walking to and fro (4 s each way): a face that never moves is taken for a
    poster and never counts, so only these can make a window published."""

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        faces = super().analyze(pixels, schedule, frame, lores=lores)
        phase = (self.clock.time() - T0) % 8.0
        step = 0.05 * (phase if phase < 4.0 else 8.0 - phase) / 4.0
        return [face(x=0.02 + 0.16 * i + step, y=0.4) for i in range(len(faces))]


class Arriving(Walking):
    """One face walks alone for the first 30 s (its windows suppressed), then six (published)."""

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        self.faces = 1 if self.clock.time() < T0 + 30 else 6
        return super().analyze(pixels, schedule, frame, lores=lores)


class Logged(Walking):
    """Logs the time of every analysis, beside the stage's ``new_window`` calls."""

    log: ClassVar[list[tuple[str, float]]] = []

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        self.log.append(("analyze", self.clock.time() - T0))
        return super().analyze(pixels, schedule, frame, lores=lores)


def health(tmp_path: Path, faces: int, per_face: float, analytics: str = "") -> list[dict[str, Any]]:
    settings = f"health_period_seconds: {PERIOD_S}" + (f", {analytics}" if analytics else "")
    run = live_run(tmp_path, faces, STOP_AT, per_face=per_face, analytics=settings)
    assert verify_all(run) == []
    return [m["body"] for m in messages(run, "health")]


def held(bodies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each message's face-dependent figures and the period they are for."""
    return [(b["period_end"], *(b[k] for k in FACE_DEPENDENT)) for b in bodies]


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_periods_of_suppressed_windows_publish_the_same_health_whoever_was_there(
    tmp_path: Path, per_face: float
) -> None:
    seen = {n: held(health(tmp_path / str(n), n, per_face)) for n in (0, 1, 4)}
    ended = [h for h in seen[0] if h[0] is not None]
    assert {h[0] - T0 for h in ended} == {60, 120, 180}, seen[0]
    assert seen[1] == seen[0]
    assert seen[4] == seen[0]


def test_periods_of_published_windows_publish_their_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_publish_timing, "SlowerWithFaces", Walking)
    bodies = health(tmp_path, 6, KEEPS_UP_S)
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert sum(s["suppressed"] is None for s in stats) >= 12, [s["suppressed"] for s in stats]
    last = bodies[-1]
    assert last["period_end"] == T0 + 180, last
    # 6 faces of 5 ms each per frame: the inference the faces cost, over the published frames
    assert last["inference_ms"] == 30, last
    assert 4000 <= last["fps_milli"] <= 5000, last  # the camera's 5 fps
    assert last["static_faces"] == [], last  # a face is reported still after 10 minutes
    # totals over the published windows that closed before the period's end (the window that
    # ends at 180 s closes in the next period): the same frames the stats bodies show
    closed = [s for s in stats if s["window_end"] < T0 + 180]
    assert last["drops"] == sum(s["frames"]["dropped"] for s in closed) > 0, last


def test_with_noise_on_no_period_publishes_figures_that_vary_with_the_faces(tmp_path: Path) -> None:
    """With noise on, no window shows its exact frame figures, so no period has any."""
    dp = "dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 100}"
    bodies = health(tmp_path, 6, KEEPS_UP_S, dp)
    ended = [b for b in bodies if b["period_end"] is not None]
    assert ended
    for b in ended:
        assert (b["fps_milli"], b["inference_ms"], b["static_faces"], b["cpu_temp_mc"]) == (None,) * 4, b
        assert (b["drops"], b["detector_skipped"], b["emotion_reused"], b["budget_dropped"]) == (0,) * 4, b


def test_a_period_takes_the_published_windows_of_a_mixed_period_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_publish_timing, "SlowerWithFaces", Arriving)
    bodies = health(tmp_path, 1, KEEPS_UP_S)
    stats = {s["window_start"] - T0: s for s in (m["body"] for m in messages(tmp_path, "stats"))}
    assert [stats[w]["suppressed"] for w in (0, 10, 20, 30, 40)] == ["below_k"] * 3 + [None] * 2, stats
    first = next(b for b in bodies if b["period_end"] == T0 + 60)
    # windows 30-40 and 40-50 (six faces, 5 ms each): over every frame of the period it was 15
    assert first["inference_ms"] == 30, first
    assert first["drops"] == stats[30]["frames"]["dropped"] + stats[40]["frames"]["dropped"], first
    assert first["fps_milli"] == round(
        1000 * (stats[30]["frames"]["analysed"] + stats[40]["frames"]["analysed"]) / 20), first


def test_each_windows_first_frame_meets_a_vision_stage_that_forgot_the_window_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change gate's reference (and whether it held faces), the emotion readings and the
    budget's cost carried how many faces a window had into the next one's figures."""
    monkeypatch.setattr(test_publish_timing, "SlowerWithFaces", Logged)
    log = Logged.log = []

    def watch(service: Any) -> None:
        forget = service.stage.new_window

        def logged() -> None:
            log.append(("new_window", service.clock.time() - T0))
            forget()

        service.stage.new_window = logged

    live_run(tmp_path, 2, 35.13, on_start=watch)
    resets = [i for i, (what, _) in enumerate(log) if what == "new_window"]
    assert len(resets) == 3, log  # windows 10, 20 and 30 s
    for i, boundary in zip(resets, (10, 20, 30), strict=True):
        around = log[i - 1 : i + 2]
        assert [what for what, _ in around] == ["analyze", "new_window", "analyze"], around
        assert around[0][1] < boundary <= around[2][1], around


def test_an_analysis_that_runs_past_its_windows_end_counts_in_the_window_it_began_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three faces of 1 s each (a small board): an analysis begun 2 s before a window's end ends
    in the next. It had the vision stage's memory of the window it began in, so it counts there
    (it was counted at its end, in the next window, with the memory of the one before)."""
    monkeypatch.setattr(test_publish_timing, "SlowerWithFaces", Logged)
    log = Logged.log = []

    def watch(service: Any) -> None:
        add = service.aggregator.add_frame

        def logged(t: float, views: Any, counters: Any) -> None:
            if counters.analysed:
                log.append(("counted", t - T0))
            add(t, views, counters)

        service.aggregator.add_frame = logged

    live_run(tmp_path, 3, 45.13, per_face=1.3, on_start=watch)
    began = [at for what, at in log if what == "analyze"]
    counted = [at for what, at in log if what == "counted"]
    assert len(counted) >= 10, log
    assert any(a // 10 != (a + 3.9) // 10 for a in began), "no analysis ran past a window's end"
    assert [a // 10 for a in began[: len(counted)]] == [c // 10 for c in counted], log
