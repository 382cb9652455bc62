"""Privacy zones and face filters: what the detector must never see, and faces not to analyse.

Zones are polygons in normalised coordinates, rasterised with numpy alone (even-odd rule on
pixel centres) into a boolean mask, cached per frame size, and painted black in place before
the frame reaches the face detector. A street window or a staff desk inside a zone is
therefore never analysed: there is nothing left to detect. As a second line, observations
whose centre falls inside a zone are dropped, and so are faces smaller than the configured
fraction of the frame height (far-away passers-by) and faces beyond the per-frame maximum.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.frame import Pixels
from agent.privacy.settings import ZoneConfig
from agent.vision.observation import FaceObservation

Mask = npt.NDArray[np.bool_]
Polygon = Sequence[tuple[float, float]]


def rasterise(polygons: Sequence[Polygon], height: int, width: int) -> Mask:
    """A (height, width) mask, True where a pixel centre lies inside any polygon (even-odd)."""
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        mask |= _rasterise_one(polygon, height, width)
    return mask


def _rasterise_one(polygon: Polygon, height: int, width: int) -> Mask:
    pts = np.asarray(polygon, dtype=np.float64) * np.array([width, height], dtype=np.float64)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(height, dtype=np.float64)[:, None] + 0.5  # row centres, one row per line
    crosses = (y0 <= yc) != (y1 <= yc)  # (rows, edges): the edge spans this row's centre
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
    rows, edges = np.nonzero(crosses)
    # A pixel c is toggled by a crossing at x when its centre c + 0.5 lies right of x.
    first = np.clip(np.floor(xs[rows, edges] - 0.5).astype(np.int64) + 1, 0, width)
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(toggles, (rows, first), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)


def covering_mask(mask: Mask, height: int, width: int) -> Mask:
    """A (height, width) mask, True for each small pixel whose footprint in the full ``mask``
    (its scaled rectangle, widened to whole pixels) holds any True pixel, and for their
    neighbours: a camera's scaler filters with taps beyond a pixel's own footprint."""
    full_h, full_w = mask.shape
    by_row = np.stack([mask[a:b].any(axis=0) for a, b in _spans(full_h, height)])
    small = np.stack([by_row[:, a:b].any(axis=1) for a, b in _spans(full_w, width)], axis=1)
    grown = np.pad(small, 1)
    out = np.zeros_like(small)
    for dy in range(3):
        for dx in range(3):
            out |= grown[dy : dy + height, dx : dx + width]
    return out


def _spans(full: int, small: int) -> list[tuple[int, int]]:
    """For each of ``small`` cells, the full-size pixels [a, b) its footprint touches."""
    scale = full / small
    spans = []
    for i in range(small):
        a = min(math.floor(i * scale), full - 1)
        spans.append((a, max(math.ceil((i + 1) * scale), a + 1)))
    return spans


Block = tuple[int, int, int, int]
"""(row_start, row_stop, col_start, col_stop): a rectangle of the mask to paint black."""


def paint(pixels: Pixels, rects: list[Block]) -> int:
    """Paint the rectangles black in place; return the pixels painted."""
    painted = 0
    for r0, r1, c0, c1 in rects:
        pixels[r0:r1, c0:c1] = 0
        painted += (r1 - r0) * (c1 - c0)
    return painted


def blocks(mask: Mask) -> list[Block]:
    """Cover a mask exactly with rectangles: runs per row, merged down identical rows.

    Painting a few rectangles costs ~2 ms on a 1080p frame, against ~35 ms for boolean
    indexing, which matters on a Raspberry Pi at 5 fps.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    out: list[Block] = []
    open_runs: dict[tuple[int, int], int] = {}
    for row in range(mask.shape[0]):
        starts = np.flatnonzero(edges[row] == 1)
        stops = np.flatnonzero(edges[row] == -1)
        runs = set(zip(starts.tolist(), stops.tolist(), strict=True))
        for run in [r for r in open_runs if r not in runs]:
            out.append((open_runs.pop(run), row, *run))
        for run in runs:
            open_runs.setdefault(run, row)
    out.extend((first, mask.shape[0], *run) for run, first in open_runs.items())
    return sorted(out)


class ZoneMask:
    """Blanks the configured zones in place; the mask is built once per frame size."""

    def __init__(self, zones: Sequence[ZoneConfig]) -> None:
        self.zones = tuple(zones)
        self._polygons = [list(z.polygon) for z in self.zones]
        self._cache: dict[tuple[int, int], Mask] = {}
        self._blocks: dict[tuple[int, int], list[Block]] = {}
        self._covering: dict[tuple[int, int, int, int], list[Block]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.zones)

    def mask(self, height: int, width: int) -> Mask:
        """The boolean mask for a frame size (cached; a camera changes size rarely)."""
        key = (height, width)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                cached = rasterise(self._polygons, height, width)
                cached.flags.writeable = False
                self._cache[key] = cached
                self._blocks[key] = blocks(cached)
        return cached

    def apply(self, pixels: Pixels) -> int:
        """Paint every zone black in ``pixels`` (H, W[, C]) in place; return pixels blanked."""
        if not self.zones:
            return 0
        key = (int(pixels.shape[0]), int(pixels.shape[1]))
        self.mask(*key)
        return paint(pixels, self._blocks[key])

    def apply_covering(self, small: Pixels, full: tuple[int, ...]) -> int:
        """Paint black every pixel of ``small`` (the camera's own downscaled copy of a frame of
        ``full`` = (H, W)) that overlaps a zone pixel of the full frame, edges included: the
        camera's scaler blended those pixels, so a pixel only partly in a zone is blanked too."""
        if not self.zones:
            return 0
        h, w = int(small.shape[0]), int(small.shape[1])
        key = (h, w, int(full[0]), int(full[1]))
        with self._lock:
            covering = self._covering.get(key)
        if covering is None:
            covering = blocks(covering_mask(self.mask(key[2], key[3]), h, w))
            with self._lock:
                covering = self._covering.setdefault(key, covering)
        return paint(small, covering)

    def covers(self, x: float, y: float) -> bool:
        """Is the normalised point (x, y) inside a zone? Uses the same even-odd rule."""
        if not self.zones:
            return False
        probe = 1000
        mask = self.mask(probe, probe)
        col = min(int(x * probe), probe - 1)
        row = min(int(y * probe), probe - 1)
        return bool(mask[max(row, 0), max(col, 0)])


def filter_faces(
    faces: Sequence[FaceObservation],
    *,
    min_face_height: float = 0.0,
    max_faces: int | None = None,
    zones: ZoneMask | None = None,
) -> list[FaceObservation]:
    """Drop faces too small or centred in a zone; keep at most ``max_faces``, largest first."""
    kept = []
    for face in faces:
        x, y, w, h = face.box
        if h < min_face_height:
            continue
        if zones is not None and zones.covers(x + w / 2, y + h / 2):
            continue
        kept.append(face)
    if max_faces is not None and len(kept) > max_faces:
        kept = sorted(kept, key=lambda f: f.box[2] * f.box[3], reverse=True)[:max_faces]
    return kept
