"""Health figures for the outputs: frame rate, inference time, drops, camera state, temperature.

``HealthMeter`` is fed by the frame loop (one call per analysed frame, one per dropped frame,
camera state changes) and summarises the last ``horizon_s`` seconds on demand. The CPU
temperature comes from the kernel's thermal zone (millidegrees Celsius in sysfs); boards that
do not expose one report None. Nothing here touches a file until ``figures()`` is called.

Inference time, frame rate, drops, the gating counters, the CPU temperature and the places of
static faces all grow with the number of faces in view; published after every window they
would tell what a suppressed window hides, and summed over an hour they still told one person
in an hour of suppressed windows. ``HealthPeriods`` therefore publishes them once per period
(default an hour), from the windows that published their own frame figures only, and the same
values in every health message until the next period ends.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.clock import Clock

if TYPE_CHECKING:
    from agent.analytics.windows import WindowReport
    from agent.crypto.canonical import JSON

logger = logging.getLogger(__name__)

THERMAL_ZONE0 = Path("/sys/class/thermal/thermal_zone0/temp")


@dataclass(frozen=True, slots=True)
class HealthFigures:
    """One snapshot; ``to_body`` gives the integers-only object for the health topic."""

    fps: float
    inference_ms: float
    """Mean vision-stage time per analysed frame over the horizon (frames the change gate let
    skip the detector included: it falls in a static empty scene)."""
    drops: int
    """Frames dropped since start: the one-slot queue was full, or over the CPU budget."""
    camera_state: str
    uptime_s: float
    cpu_temp_c: float | None

    def to_body(self) -> dict[str, int | str | None]:
        return {
            "fps_milli": round(self.fps * 1000),
            "inference_ms": round(self.inference_ms),
            "drops": self.drops,
            "camera": self.camera_state,
            "uptime_s": int(self.uptime_s),
            "cpu_temp_mc": None if self.cpu_temp_c is None else round(self.cpu_temp_c * 1000),
        }


def read_cpu_temp_c(path: Path = THERMAL_ZONE0) -> float | None:
    """The thermal zone's temperature in °C, or None when the board has none or it is unreadable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return int(text) / 1000.0
    except ValueError:
        logger.warning("unreadable CPU temperature", extra={"fields": {"path": str(path)}})
        return None


class HealthMeter:
    """Rolling frame rate and inference time over the last ``horizon_s`` seconds (monotonic)."""

    def __init__(
        self,
        clock: Clock,
        temp_path: Path = THERMAL_ZONE0,
        horizon_s: float = 10.0,
        max_samples: int = 4096,
    ) -> None:
        self.clock = clock
        self.temp_path = temp_path
        self.horizon_s = horizon_s
        self._started = clock.monotonic()
        self._frames: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.drops = 0
        self.camera_state = "starting"

    def frame(self, inference_ms: float) -> None:
        """Record one analysed frame and how long its inference took."""
        self._frames.append((self.clock.monotonic(), inference_ms))

    def dropped(self, count: int = 1) -> None:
        self.drops += count

    def camera(self, state: str) -> None:
        """Camera state as the service names it: starting, up, reconnecting, ended, ..."""
        self.camera_state = state

    def figures(self) -> HealthFigures:
        now = self.clock.monotonic()
        while self._frames and self._frames[0][0] <= now - self.horizon_s:
            self._frames.popleft()
        recent = list(self._frames)
        span = min(self.horizon_s, now - self._started)
        fps = len(recent) / span if span > 0 else 0.0
        inference = sum(ms for _, ms in recent) / len(recent) if recent else 0.0
        return HealthFigures(
            fps=fps,
            inference_ms=inference,
            drops=self.drops,
            camera_state=self.camera_state,
            uptime_s=now - self._started,
            cpu_temp_c=read_cpu_temp_c(self.temp_path),
        )


FACE_DEPENDENT: tuple[str, ...] = (
    "fps_milli",
    "inference_ms",
    "drops",
    "cpu_temp_mc",
    "detector_skipped",
    "emotion_reused",
    "budget_dropped",
    "static_faces",
)
"""Health keys whose value varies with the number of faces: published per period only."""

COUNTERS: tuple[str, ...] = ("drops", "detector_skipped", "emotion_reused", "budget_dropped")
"""The ``FACE_DEPENDENT`` keys that are totals since start (over the windows that count)."""


class HealthPeriods:
    """Holds the face-dependent health figures to one value per period (aligned to the clock),
    taken only from windows that published their frame figures (``WindowReport.shows_frames``).

    ``publishable(live, now, window)`` returns the live body with every ``FACE_DEPENDENT`` key
    replaced by its figure for the last completed period (None until one has completed), plus
    ``period_end``. A period's figures are over the windows that closed in it and showed their
    frames: frame rate and inference time are means over those windows' frames, the temperature
    is the one read as the last of them closed, ``static_faces`` the grid cells where a face
    stood still in them, and the counters are totals since start over such windows. A period in
    which no window showed its frames (all suppressed, or noise on) publishes None for the means,
    the temperature and the cells, and the counters unchanged: nothing then varies with who was
    there, as the suppressed windows' own bodies do not.
    """

    def __init__(self, period_s: float, totals: Mapping[str, int] | None = None) -> None:
        """``totals``: the counters of the periods this one replaces (a reload), so they keep
        counting since start."""
        self.period_s = period_s
        self._period: int | None = None
        self._totals = {k: 0 for k in COUNTERS} | dict(totals or {})
        self._windows = self._frames = 0
        self._seconds = self._ms = 0.0
        self._static: frozenset[str] = frozenset()
        self._temperature: JSON = None
        self._held: dict[str, JSON] = dict.fromkeys(FACE_DEPENDENT)
        self._held_end: int | None = None

    def retuned(self, period_s: float) -> HealthPeriods:
        """A holder with another period that goes on from this one's totals; its held figures
        start empty (never early)."""
        return HealthPeriods(period_s, self._totals)

    def publishable(
        self, live: Mapping[str, JSON], now: float, window: WindowReport | None = None
    ) -> dict[str, JSON]:
        """``window``: the report this health message follows, whose load counts in the period
        ``now`` falls in if it showed its frame figures."""
        self._roll(now)
        if window is not None and window.shows_frames:
            self._count(window, live.get("cpu_temp_mc"))
        out = {k: v for k, v in live.items() if k not in FACE_DEPENDENT}
        out.update(self._held)
        out["period_end"] = self._held_end
        return out

    def _count(self, window: WindowReport, temperature: JSON) -> None:
        load = window.load
        self._windows += 1
        self._frames += window.frames_analysed
        self._seconds += window.window_end - window.window_start
        self._ms += load.vision_ms
        self._static |= load.static_cells
        self._temperature = temperature
        self._totals["drops"] += load.overloaded
        self._totals["detector_skipped"] += load.detector_skipped
        self._totals["emotion_reused"] += load.emotion_reused
        self._totals["budget_dropped"] += load.budget_dropped

    def _roll(self, now: float) -> None:
        period = math.floor(now / self.period_s)
        if self._period is None or period < self._period:  # first call, or the clock went back
            self._period = period
            self._start_period()
            return
        if period == self._period:
            return
        held: dict[str, JSON] = dict.fromkeys(FACE_DEPENDENT)
        held.update(self._totals)
        if self._windows:
            held["fps_milli"] = round(1000 * self._frames / self._seconds) if self._seconds > 0 else 0
            held["inference_ms"] = round(self._ms / self._frames) if self._frames else 0
            held["cpu_temp_mc"] = self._temperature
            held["static_faces"] = sorted(self._static)
        self._held, self._held_end = held, int(period * self.period_s)
        self._period = period
        self._start_period()

    def _start_period(self) -> None:
        self._windows = self._frames = 0
        self._seconds = self._ms = 0.0
        self._static = frozenset()
        self._temperature = None
