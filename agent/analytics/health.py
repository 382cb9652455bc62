"""Health figures for the outputs: frame rate, inference time, drops, camera state, temperature.

``HealthMeter`` is fed by the frame loop (one call per analysed frame, one per dropped frame,
camera state changes) and summarises the last ``horizon_s`` seconds on demand. The CPU
temperature comes from the kernel's thermal zone (millidegrees Celsius in sysfs); boards that
do not expose one report None. Nothing here touches a file until ``figures()`` is called.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from agent.clock import Clock

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
