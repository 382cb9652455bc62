#!/usr/bin/env python3
"""Build the demo clip samples/lobby.mp4 from the pinned media, deterministically.

A synthetic lobby (wall, floor, door, a coffee poster: no faces) seen at 640x360, 5 fps:

    share of the clip   20 s default   people   what
    0.00-0.20           0-4 s          0        empty lobby
    0.20-0.25           4-5 s          (1)      the astronaut walks in from the left (partly visible)
    0.25-0.50           5-10 s         1        the astronaut crosses slowly to the right
    0.50-0.80           10-16 s        6        the six-person group photo, panned slowly
    0.80-1.00           16-20 s        0        empty lobby

Next to the clip goes ``<name>.timeline.json``: the segments and the expected number of people
in every frame (null while the astronaut is only partly in view), for end-to-end tests.
Run ``tools/fetch_media.py`` (``make media``) first. Same media and OpenCV build: same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / ".cache" / "media"
WIDTH, HEIGHT, FPS = 640, 360, 5
Image = npt.NDArray[np.uint8]

# (start share, end share, people, what); people None = partly visible, not a fair count
SEGMENTS: list[tuple[float, float, int | None, str]] = [
    (0.00, 0.20, 0, "empty lobby"),
    (0.20, 0.25, None, "the astronaut walks in from the left (partly visible)"),
    (0.25, 0.50, 1, "the astronaut crosses slowly to the right"),
    (0.50, 0.80, 6, "the six-person group photo, panned slowly"),
    (0.80, 1.00, 0, "empty lobby"),
]
ASTRONAUT_CROP = (110, 10, 350, 300)  # x0, y0, x1, y1 in astronaut.png: head and shoulders
ASTRONAUT_SCALE = 0.8  # face about 84 px high in the clip
GROUP_SCALE = 0.52  # group6.jpg 1280x886 -> 666x461; all six faces stay inside the 640x360 view
GROUP_PAN = ((2, 0), (24, 0))  # view offset (x, y) at the start and end of the group segment: a slow pan


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    people: int | None
    what: str


@dataclass(frozen=True)
class Timeline:
    fps: int
    seconds: float
    width: int
    height: int
    segments: list[Segment]
    people_per_frame: list[int | None]


def timeline(seconds: float) -> Timeline:
    frames = round(seconds * FPS)
    segs = [Segment(round(a * seconds, 3), round(b * seconds, 3), n, w) for a, b, n, w in SEGMENTS]
    per_frame = [segment_at(segs, i / FPS).people for i in range(frames)]
    return Timeline(FPS, seconds, WIDTH, HEIGHT, segs, per_frame)


def segment_at(segs: list[Segment], t: float) -> Segment:
    for seg in segs:
        if seg.start <= t < seg.end:
            return seg
    return segs[-1]


def load(media: Path, name: str) -> Image:
    pixels = cv2.imread(str(media / name), cv2.IMREAD_COLOR)
    if pixels is None:
        sys.exit(f"make_sample: {media / name} is missing: run `make media` (tools/fetch_media.py) first")
    return np.asarray(pixels, dtype=np.uint8)


def lobby_background(media: Path) -> Image:
    """A plain lobby: warm wall, darker floor, a door and a poster of a coffee cup."""
    bg = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    wall = np.linspace(180, 150, HEIGHT, dtype=np.float32)[:, None, None] * np.array([0.85, 0.95, 1.0])
    bg[:] = wall.astype(np.uint8)
    floor_y = int(HEIGHT * 0.72)
    bg[floor_y:] = (70, 80, 95)
    cv2.rectangle(bg, (470, 90), (560, floor_y), (60, 75, 110), -1)  # door
    cv2.circle(bg, (548, 180), 4, (40, 160, 200), -1)
    poster = cv2.resize(load(media, "coffee.png"), (120, 80), interpolation=cv2.INTER_AREA)
    bg[60:140, 60:180] = poster
    cv2.rectangle(bg, (58, 58), (181, 141), (40, 40, 40), 2)
    return bg


def feathered_person(media: Path) -> tuple[Image, npt.NDArray[np.float32]]:
    """The astronaut's head and shoulders with a soft elliptical mask (no hard paste edges)."""
    x0, y0, x1, y1 = ASTRONAUT_CROP
    crop = load(media, "astronaut.png")[y0:y1, x0:x1]
    size = (round(crop.shape[1] * ASTRONAUT_SCALE), round(crop.shape[0] * ASTRONAUT_SCALE))
    person = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    mask = np.zeros(person.shape[:2], np.float32)
    h, w = mask.shape
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 6, h // 2 - 4), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 5)
    return np.asarray(person, np.uint8), np.asarray(mask[:, :, None], np.float32)


def paste(frame: Image, person: Image, mask: npt.NDArray[np.float32], x: int, y: int) -> None:
    """Blend ``person`` at (x, y); whatever falls outside the frame is cut off."""
    h, w = person.shape[:2]
    fx0, fx1 = max(x, 0), min(x + w, WIDTH)
    if fx0 >= fx1:
        return
    px0, px1 = fx0 - x, fx1 - x
    region = frame[y : y + h, fx0:fx1].astype(np.float32)
    m = mask[:, px0:px1]
    frame[y : y + h, fx0:fx1] = (m * person[:, px0:px1] + (1 - m) * region).astype(np.uint8)


def sensor_noise(frame: Image, index: int) -> Image:
    """A little per-frame noise, seeded by the frame number, so the clip is deterministic."""
    noise = np.random.default_rng(index).integers(-3, 4, frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Scene:
    """The still parts every frame is composed from."""

    background: Image
    person: Image
    mask: npt.NDArray[np.float32]
    group: Image

    @classmethod
    def load(cls, media: Path) -> Scene:
        group = load(media, "group6.jpg")
        size = (round(group.shape[1] * GROUP_SCALE), round(group.shape[0] * GROUP_SCALE))
        person, mask = feathered_person(media)
        group = np.asarray(cv2.resize(group, size, interpolation=cv2.INTER_AREA), np.uint8)
        return cls(lobby_background(media), person, mask, group)


def render(index: int, tl: Timeline, scene: Scene) -> Image:
    t = index / FPS
    seg = segment_at(tl.segments, t)
    frac = (t - seg.start) / max(seg.end - seg.start, 1e-9)
    if seg.people == 6:
        (xa, ya), (xb, yb) = GROUP_PAN
        x, y = round(xa + (xb - xa) * frac), round(ya + (yb - ya) * frac)
        return sensor_noise(np.ascontiguousarray(scene.group[y : y + HEIGHT, x : x + WIDTH]), index)
    frame = scene.background.copy()
    if seg.people != 0:
        w = scene.person.shape[1]
        x = round(-w + (40 + w) * frac) if seg.people is None else round(40 + 360 * frac)
        paste(frame, scene.person, scene.mask, x, HEIGHT - scene.person.shape[0] - 20)
    return sensor_noise(frame, index)


def build_sample(
    out: Path, seconds: float = 20.0, media: Path = MEDIA, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> Timeline:
    """Write the clip (atomically) and its timeline JSON; return the timeline. A ``size`` other
    than 640x360 scales each rendered frame (bilinear): the same scene for a larger camera."""
    tl = timeline(seconds)
    scene = Scene.load(media)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), FPS, size)
    if not writer.isOpened():
        sys.exit(f"make_sample: OpenCV cannot write {tmp} (no FFmpeg mp4v encoder?)")
    try:
        for i in range(len(tl.people_per_frame)):
            frame = render(i, tl, scene)
            if size != (WIDTH, HEIGHT):
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            writer.write(frame)
    finally:
        writer.release()
    os.replace(tmp, out)
    meta = out.with_suffix(".timeline.json")
    meta.write_text(json.dumps(asdict(tl), indent=1) + "\n", encoding="utf-8")
    return tl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "samples" / "lobby.mp4", help="clip to write")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length (default 20)")
    parser.add_argument("--media", type=Path, default=MEDIA, help="folder of the pinned media")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="frame size WxH (e.g. 1920x1080)")
    args = parser.parse_args(argv)
    if not 2 <= args.seconds <= 600:
        parser.error("--seconds must be between 2 and 600")
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WxH, e.g. 1920x1080")
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        parser.error(f"--size {args.size!r}: each side must be 64-4096")
    tl = build_sample(args.out, args.seconds, args.media, (w, h))
    print(f"wrote {args.out} ({len(tl.people_per_frame)} frames, {w}x{h} @ {FPS} fps)")
    for seg in tl.segments:
        people = "partly 1" if seg.people is None else seg.people
        print(f"  {seg.start:6.1f}-{seg.end:6.1f} s  people {people}: {seg.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
