"""Where a face is, where it is going, and whether it ever moves: the tracker's geometry.

Constant-velocity motion as in SORT (Bewley et al. 2016), without the Kalman covariance: the
velocity is an exponential average of the centre's displacement per second, and the search
radius (the *gate*) grows linearly with the time since the face was last seen, at the fastest
speed a face is assumed to reach. Distances are in widths of the track's face, so the same
settings hold near the camera and far from it. Plain floats: a handful of numbers per track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Box = tuple[float, float, float, float]
VELOCITY_WEIGHT = 0.5
"""Weight of the newest displacement in the velocity average (1 = last step only)."""
SIZE_WEIGHT = 0.3
"""Weight of the newest box in the face-size average (detector boxes jitter in size)."""


def centre(box: Box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


@dataclass(slots=True)
class Motion:
    """Centre, velocity (frame units per second) and face width of one track."""

    cx: float
    cy: float
    width: float
    height: float
    seen_at: float
    vx: float = 0.0
    vy: float = 0.0
    steps: int = 0
    """Observations after the first: 0 means the velocity is still unknown."""

    @classmethod
    def start(cls, box: Box, t: float) -> Motion:
        cx, cy = centre(box)
        return cls(cx, cy, max(box[2], 1e-6), max(box[3], 1e-6), t)

    def predict(self, t: float) -> tuple[float, float]:
        """Where the centre should be at ``t`` if the face kept its velocity."""
        dt = max(t - self.seen_at, 0.0)
        return self.cx + self.vx * dt, self.cy + self.vy * dt

    def gate(self, t: float, base_widths: float, max_speed: float) -> float:
        """Search radius in face widths at ``t``: ``base_widths`` plus the farthest a face moving
        at ``max_speed`` widths per second can stray from the prediction since last seen."""
        return base_widths + max_speed * max(t - self.seen_at, 0.0)

    def update(self, box: Box, t: float) -> None:
        cx, cy = centre(box)
        dt = t - self.seen_at
        if dt > 0:
            vx, vy = (cx - self.cx) / dt, (cy - self.cy) / dt
            a = 1.0 if self.steps == 0 else VELOCITY_WEIGHT
            self.vx += a * (vx - self.vx)
            self.vy += a * (vy - self.vy)
            self.steps += 1
        self.cx, self.cy, self.seen_at = cx, cy, max(t, self.seen_at)
        self.width += SIZE_WEIGHT * (max(box[2], 1e-6) - self.width)
        self.height += SIZE_WEIGHT * (max(box[3], 1e-6) - self.height)


@dataclass(slots=True)
class Stillness:
    """How long a face has stayed within ``tolerance`` face widths of one spot.

    The centre is smoothed first (exponential average, weight ``SIZE_WEIGHT``) so that one
    jittery detector box does not count as a move. The anchor is where the smoothed centre last
    moved; a move beyond the tolerance re-anchors it. A printed face never leaves its anchor; a
    person's head does within seconds.
    """

    x: float
    y: float
    anchor_x: float
    anchor_y: float
    since: float
    moved: bool = False
    """Has left its first spot at least once: until then it may be a poster."""

    @classmethod
    def start(cls, box: Box, t: float) -> Stillness:
        cx, cy = centre(box)
        return cls(cx, cy, cx, cy, t)

    def update(self, box: Box, t: float, width: float, tolerance: float) -> None:
        cx, cy = centre(box)
        self.x += SIZE_WEIGHT * (cx - self.x)
        self.y += SIZE_WEIGHT * (cy - self.y)
        if math.hypot(self.x - self.anchor_x, self.y - self.anchor_y) > tolerance * width:
            self.anchor_x, self.anchor_y, self.since, self.moved = self.x, self.y, t, True

    def still_for(self, t: float) -> float:
        return max(t - self.since, 0.0)


def grid_cell(x: float, y: float, cells: int) -> str:
    """Coarse location of a point of the view: row letter and column number, ``A1`` top left."""
    col = min(max(int(x * cells), 0), cells - 1)
    row = min(max(int(y * cells), 0), cells - 1)
    return f"{chr(ord('A') + row)}{col + 1}"
