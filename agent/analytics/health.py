"""Health figures for the outputs: frame rate, inference time, drops, camera state, temperature.

``HealthMeter`` is fed by the frame loop (one call per analysed frame, one per dropped frame,
camera state changes) and summarises the last ``horizon_s`` seconds on demand. The CPU
temperature comes from the kernel's thermal zone (millidegrees Celsius in sysfs); boards that
do not expose one report None. Nothing here touches a file until ``figures()`` is called.

Inference time, frame rate, drops, the gating counters, the CPU temperature and the places of
static faces all grow with the number of faces in view; published after every window they
would tell what a suppressed window hides. ``HealthPeriods`` therefore publishes them once per
period (default an hour), as totals and means over the period before, and the same values in
every health message until the next period ends.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.clock import Clock

if TYPE_CHECKING:
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
        self.frames_total = 0
        self.inference_ms_total = 0.0

    def frame(self, inference_ms: float) -> None:
        """Record one analysed frame and how long its inference took."""
        self._frames.append((self.clock.monotonic(), inference_ms))
        self.frames_total += 1
        self.inference_ms_total += inference_ms

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


class HealthPeriods:
    """Holds the face-dependent health figures to one value per period (aligned to the clock).

    ``publishable(live, now)`` returns the live body with every ``FACE_DEPENDENT`` key replaced
    by its figure for the last completed period (None until one has completed), plus
    ``period_end``. Frame rate and inference time are means over the period; counters are
    totals at its end; ``static_faces`` lists the grid cells where a face was static during it.
    """

    def __init__(self, period_s: float, meter: HealthMeter) -> None:
        self.period_s = period_s
        self.meter = meter
        self._period: int | None = None
        self._since = 0.0
        self._frames = 0
        self._ms = 0.0
        self._static: set[str] = set()
        self._held: dict[str, JSON] = dict.fromkeys(FACE_DEPENDENT)
        self._held_end: int | None = None

    def observe_static(self, cells: Iterable[str]) -> None:
        self._static.update(cells)

    def publishable(self, live: Mapping[str, JSON], now: float) -> dict[str, JSON]:
        self._roll(live, now)
        out = {k: v for k, v in live.items() if k not in FACE_DEPENDENT}
        out.update(self._held)
        out["period_end"] = self._held_end
        return out

    def _roll(self, live: Mapping[str, JSON], now: float) -> None:
        period = math.floor(now / self.period_s)
        m = self.meter
        if self._period is None or period < self._period:  # first call, or the clock went back
            self._restart(period, now)
            return
        if period == self._period:
            return
        frames, span = m.frames_total - self._frames, max(now - self._since, 1e-9)
        held: dict[str, JSON] = {k: live.get(k) for k in FACE_DEPENDENT}
        held["fps_milli"] = round(1000 * frames / span)
        held["inference_ms"] = round((m.inference_ms_total - self._ms) / frames) if frames else 0
        held["static_faces"] = sorted(self._static)
        self._held, self._held_end = held, int(period * self.period_s)
        self._restart(period, now)

    def _restart(self, period: int, now: float) -> None:
        self._period, self._since = period, now
        self._frames, self._ms = self.meter.frames_total, self.meter.inference_ms_total
        self._static = set()
