"""Privacy zones: polygons blanked in place before detection; small and surplus faces dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.privacy.settings import ZoneConfig
from agent.privacy.zones import ZoneMask, blocks, filter_faces, rasterise
from agent.vision.observation import FaceObservation, Quality

SQUARE = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]


def zone(points: list[tuple[float, float]], name: str = "z") -> ZoneConfig:
    return ZoneConfig(name=name, polygon=points)


def test_square_covers_exactly_the_pixel_centres_inside_it() -> None:
    mask = rasterise([SQUARE], 8, 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:6, 2:6] = True
    assert np.array_equal(mask, expected)


def test_triangle_and_concave_polygon_follow_the_even_odd_rule() -> None:
    tri = rasterise([[(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]], 4, 4)
    assert tri.astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]]
    # a U shape: the notch in the middle top stays visible
    u_shape = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.5), (0.75, 0.5), (0.75, 0.0), (1.0, 0.0),
               (1.0, 1.0), (0.0, 1.0)]
    mask = rasterise([u_shape], 4, 4)
    assert mask.astype(int).tolist() == [[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_mask_agrees_with_a_direct_point_in_polygon_test() -> None:
    rng = np.random.default_rng(7)
    poly = [tuple(p) for p in rng.uniform(0, 1, size=(7, 2)).tolist()]
    h, w = 37, 53
    mask = rasterise([poly], h, w)
    pts = np.array(poly) * [w, h]
    for r in range(h):
        for c in range(w):
            x, y = c + 0.5, r + 0.5
            inside = False
            for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
                if (y0 <= y) != (y1 <= y) and x > x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
            assert mask[r, c] == inside, (r, c)


def test_blocks_cover_the_mask_exactly() -> None:
    rng = np.random.default_rng(3)
    mask = rasterise([[tuple(p) for p in rng.uniform(0, 1, size=(9, 2)).tolist()]], 60, 80)
    painted = np.zeros_like(mask)
    for r0, r1, c0, c1 in blocks(mask):
        assert not painted[r0:r1, c0:c1].any(), "blocks overlap"
        painted[r0:r1, c0:c1] = True
    assert np.array_equal(painted, mask)


def test_apply_blanks_zones_in_place_and_leaves_the_rest() -> None:
    pixels = np.full((40, 60, 3), 200, dtype=np.uint8)
    zm = ZoneMask([zone(SQUARE)])
    painted = zm.apply(pixels)
    assert painted == 20 * 30
    assert not pixels[10:30, 15:45].any()
    assert (pixels[:10] == 200).all()
    assert (pixels[30:] == 200).all()
    assert (pixels[:, :15] == 200).all()
    assert (pixels[:, 45:] == 200).all()


def test_mask_is_cached_per_frame_size() -> None:
    zm = ZoneMask([zone(SQUARE)])
    first = zm.mask(40, 60)
    assert zm.mask(40, 60) is first
    assert zm.mask(80, 120).shape == (80, 120)
    assert not first.flags.writeable


def test_no_zones_changes_nothing() -> None:
    pixels = np.full((10, 10, 3), 9, dtype=np.uint8)
    assert ZoneMask([]).apply(pixels) == 0
    assert (pixels == 9).all()


def face(x: float, y: float, w: float, h: float) -> FaceObservation:
    return FaceObservation(box=(x, y, w, h), score=0.9, keypoints=(),
                           quality=Quality(face_px=50, sharpness=50, brightness=100, yaw_degrees=0))


def test_filter_drops_small_faces_faces_in_zones_and_keeps_the_largest() -> None:
    far = face(0.1, 0.1, 0.03, 0.04)
    in_zone = face(0.4, 0.4, 0.2, 0.2)  # centre (0.5, 0.5) is inside SQUARE
    big = face(0.0, 0.8, 0.2, 0.19)
    mid = face(0.8, 0.0, 0.1, 0.1)
    kept = filter_faces([far, in_zone, big, mid], min_face_height=0.05, max_faces=1,
                        zones=ZoneMask([zone(SQUARE)]))
    assert kept == [big]
    assert filter_faces([far, big, mid], min_face_height=0.05) == [big, mid]


@pytest.mark.parametrize(("zones", "message"), [
    ("[{name: a, polygon: [[0, 0], [1.2, 0], [1, 1]]}]", "vertex 1 [1.2, 0.0] is outside the frame"),
    ("[{name: a, polygon: [[0, 0], [1, 0]]}]", "policy.zones.0.polygon"),
    ("[{name: a, polygon: [[0, 0], [1, 0], [1, 1]]}, {name: a, polygon: [[0, 0], [1, 0], [0, 1]]}]",
     "names must be unique (repeated: a)"),
])
def test_zone_errors_are_explained(zones: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"device_id: a\npolicy:\n  zones: {zones}\n", "c.yaml")
    assert message in str(info.value)


@pytest.mark.parametrize("polygon", [
    "[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]",  # a diagonal line
    "[[0.2, 0.3], [0.8, 0.3], [0.5, 0.3], [0.2, 0.3]]",  # a horizontal line
    "[[0.4, 0.4], [0.4, 0.4], [0.4, 0.4]]",  # one point
    "[[0, 0], [1, 0], [0, 0]]",  # an edge of the frame, there and back
])
def test_a_zone_without_area_is_refused_naming_it(polygon: str) -> None:
    """Vertices all on one line enclose no pixel: the zone blanked nothing, yet check-config
    called it valid and policy explain listed it as protecting that part of the frame."""
    points = [(x, y) for x, y in json.loads(polygon)]
    assert not rasterise([points], 480, 640).any()  # what the detector would have seen: everything
    with pytest.raises(ConfigError) as info:
        parse_config(f"device_id: a\npolicy:\n  zones: [{{name: street, polygon: {polygon}}}]\n", "c.yaml")
    assert "policy.zones.0.polygon (c.yaml:3): zone street: its vertices" in str(info.value)
    assert "all lie on one line, so it covers nothing" in str(info.value)


def test_a_thin_zone_with_area_is_kept() -> None:
    text = "device_id: a\npolicy:\n  zones: [{name: strip, polygon: [[0, 0], [1, 0], [1, 0.01]]}]\n"
    cfg = parse_config(text)
    assert cfg.policy.zones[0].name == "strip"
