"""Tiled detection for large frames with small, far faces (pure logic, no OpenCV).

BlazeFace full-range sees a 192 x 192 letterbox of the whole frame, so a face narrower than
about 5% of the frame width (about 80 px in 1920 x 1080) falls below what it can find
(docs/vision.md has the measurements). With ``vision.tiles: n`` the detector also runs on an
n x n grid of overlapping tiles; the detections are mapped back to the frame and merged.
"""

from __future__ import annotations

from agent.vision.observation import Detection

OVERLAP = 0.2
"""Share of a tile's side that overlaps its neighbour, so a face on a seam is whole in one."""
MERGE_IOU = 0.3
MERGE_COVER = 0.6
"""A detection mostly inside a better one (intersection over its own area) is the same face,
cut by a tile's edge."""


def tile_grid(width: int, height: int, n: int, overlap: float = OVERLAP) -> list[tuple[int, int, int, int]]:
    """x0, y0, x1, y1 of an n x n grid of tiles, each overlapping its neighbours by ``overlap``."""
    if n <= 1:
        return []

    def spans(size: int) -> list[tuple[int, int]]:
        side = size / (n - (n - 1) * overlap)
        step = side * (1 - overlap)
        out = []
        for i in range(n):
            a = min(round(i * step), size - 1)
            out.append((a, max(min(size, round(i * step + side)), a + 1)))  # never empty
        return out

    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def to_frame(det: Detection, tile: tuple[int, int, int, int], width: int, height: int) -> Detection:
    """A detection inside a tile, in normalised coordinates of the whole frame."""
    x0, y0, x1, y1 = tile
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    ox, oy = x0 / width, y0 / height
    bx, by, bw, bh = det.box
    return Detection(
        box=(ox + bx * sx, oy + by * sy, bw * sx, bh * sy),
        score=det.score,
        keypoints=tuple((ox + x * sx, oy + y * sy) for x, y in det.keypoints),
    )


def _overlap(a: Detection, b: Detection) -> tuple[float, float]:
    """(IoU, intersection over the area of ``b``)."""
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_b = bw * bh
    union = aw * ah + area_b - inter
    return (inter / union if union > 0 else 0.0), (inter / area_b if area_b > 0 else 0.0)


def merge(detections: list[Detection], max_faces: int) -> list[Detection]:
    """Best first; drop any detection that is the same face as a better one."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if len(kept) >= max_faces:
            break
        if all(
            iou <= MERGE_IOU and cover <= MERGE_COVER
            for iou, cover in (_overlap(k, det) for k in kept)
        ):
            kept.append(det)
    return kept
