"""Scenes made in the test from the pinned real media: real faces moving across real backgrounds.

Numbers are in pixels of a 960x540 view unless named ``_fw`` (widths of the moving face, as the
detector boxes it). A ``Sprite`` is pixels plus an alpha mask; ``paste`` blends it, cut at the
frame's edges. Nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

WIDTH, HEIGHT = 640, 360
Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Sprite:
    pixels: Image
    alpha: Mask  # (h, w, 1) in 0..1

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def load(media: Path, name: str, flags: int = cv2.IMREAD_COLOR) -> Image:
    img = cv2.imread(str(media / name), flags)
    assert img is not None, f"{media / name} missing: run `make media`"
    return np.asarray(img, np.uint8)


def backdrop(media: Path, name: str = "motorcycle.png") -> Image:
    """A real photo as the background, filling the view."""
    return np.asarray(cv2.resize(load(media, name), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), np.uint8)


def _feathered(crop: Image, scale: float) -> Sprite:
    size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
    pixels = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), np.uint8)
    h, w = pixels.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 3, h // 2 - 3), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, w / 40))
    return Sprite(pixels, np.asarray(mask[:, :, None], np.float32))


def astronaut(media: Path, scale: float = 0.5) -> Sprite:
    """Eileen Collins' head and shoulders (skimage astronaut): face about 105 * scale px wide."""
    return _feathered(load(media, "astronaut.png")[10:300, 110:350], scale)


def group_member(media: Path, scale: float = 0.5) -> Sprite:
    """One person's head from the insightface group photo (a different face from the astronaut)."""
    return _feathered(load(media, "group6.jpg")[200:470, 400:640], scale)


def printed_face(media: Path, width: int = 70) -> Sprite:
    """A printed photo of a face on the wall: faded colours, a white border, hard edges."""
    face = load(media, "astronaut.png")[20:260, 150:330].astype(np.float32)
    grey = face.mean(axis=2, keepdims=True)
    faded = 0.55 * face + 0.45 * grey
    faded = 40 + 0.8 * faded
    h = round(width * face.shape[0] / face.shape[1])
    print_ = cv2.resize(np.clip(faded, 0, 255).astype(np.uint8), (width, h), interpolation=cv2.INTER_AREA)
    framed = cv2.copyMakeBorder(print_, 6, 6, 6, 6, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    return Sprite(np.asarray(framed, np.uint8), np.ones((*framed.shape[:2], 1), np.float32))


def logo(media: Path, width: int = 120) -> Sprite:
    """scikit-image's logo with its own transparency."""
    rgba = load(media, "logo.png", cv2.IMREAD_UNCHANGED)
    h = round(width * rgba.shape[0] / rgba.shape[1])
    small = cv2.resize(rgba, (width, h), interpolation=cv2.INTER_AREA)
    return Sprite(np.asarray(small[:, :, :3], np.uint8), (small[:, :, 3:4] / 255.0).astype(np.float32))


def paste(frame: Image, sprite: Sprite, x: float, y: float) -> None:
    """Blend ``sprite`` with its top left corner at (x, y); what falls outside is cut off."""
    w, h = sprite.size
    x0, y0 = round(x), round(y)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    px, py = fx0 - x0, fy0 - y0
    a = sprite.alpha[py : py + fy1 - fy0, px : px + fx1 - fx0]
    src = sprite.pixels[py : py + fy1 - fy0, px : px + fx1 - fx0].astype(np.float32)
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = (a * src + (1 - a) * region).astype(np.uint8)


def sensor_noise(frame: Image, seed: int) -> Image:
    noise = np.random.default_rng(seed).integers(-3, 4, frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


Painter = Callable[[Image, int], None]
"""Draws one moving thing into frame i (in place)."""


def walker(sprite: Sprite, x0: float, y0: float, step_px: float) -> Painter:
    """A person crossing the view: ``step_px`` per frame along x, a small gait bob along y."""

    def paint(frame: Image, i: int) -> None:
        paste(frame, sprite, x0 + step_px * i, y0 + 4 * np.sin(i * 0.9))

    return paint


def pillar(x: int, width: int) -> Painter:
    """A dark column in front of everything: whoever walks behind it is hidden."""

    def paint(frame: Image, i: int) -> None:
        frame[:, x : x + width] = (45, 50, 60)

    return paint


def frames(background: Image, painters: list[Painter], count: int) -> Iterator[tuple[int, Image]]:
    """(index, frame) for ``count`` frames: background, each painter in order, sensor noise."""
    for i in range(count):
        frame = background.copy()
        for paint in painters:
            paint(frame, i)
        yield i, sensor_noise(frame, i)
