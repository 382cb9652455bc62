#!/usr/bin/env python3
"""How detection, emotion labels and the quality gate hold up as a real face is degraded.

    .venv/bin/python tools/robustness_report.py                 # Markdown table on stdout
    .venv/bin/python tools/robustness_report.py --out DIR       # + DIR/robustness.md, one SVG per condition
    .venv/bin/python tools/robustness_report.py --json          # one JSON object

Faces: ``tools/robustness_faces.json`` (real faces from scikit-image and insightface, pinned by
``tools/fetch_media.py``, each with the expression read by eye). Each face is cut out with
context (2.5 face heights square), scaled to a face height of 96 px and centred in a 640 x 360
mid-grey frame; that frame is then degraded at graded levels (brightness, gamma, low light with
and without auto-gain, sensor noise, JPEG quality, face height 16-160 px, motion blur, in-plane
rotation, vertical squash, horizontal flip) and run through the agent's own detector, aligner,
quality gate and classifier, float and int8 side by side.

Per condition and level, over the faces:

- ``detected``: the detector found the face (a detection whose centre is inside its box);
- ``agree``: of the faces read (detected and passed the gate), the share whose top label is the
  one the same precision gives on the undegraded frame;
- ``correct``: of the faces read, the share whose top label is the label read by eye;
- ``abstain``: of the faces detected, the share the quality gate refused;
- ``justified``: of those abstentions, the share where the classifier, run anyway, would have
  been wrong (top label != the label read by eye): an abstention that avoided a wrong reading.

Two preprocessing candidates are scored beside the agent's reading, on the same crops, so that
they are kept only where they help (docs/vision.md): ``mirror`` (mean of the crop's and its
mirror image's probabilities) and ``equalise`` (the crop blended half and half with its
histogram-equalised self), as ``correct`` over every detected face, gated or not.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.vision.detector import FaceDetector  # noqa: E402
from agent.vision.emotion import EmotionClassifier  # noqa: E402
from agent.vision.manifest import default_models_dir, model_spec  # noqa: E402
from agent.vision.observation import Detection  # noqa: E402
from agent.vision.precision import with_float_io  # noqa: E402
from agent.vision.quality import GateLimits, gate, laplacian_variance, yaw_degrees  # noqa: E402
from agent.vision.runtime import BACKENDS  # noqa: E402

Image = npt.NDArray[np.uint8]
MEDIA = ROOT / ".cache" / "media"
FACES = ROOT / "tools" / "robustness_faces.json"
FRAME_W, FRAME_H = 640, 360
FACE_PX = 96
"""Face height of the reference frame (about 2 m from a 66-degree 640 x 360 camera)."""
BACKGROUND = 110
LIMITS = GateLimits()
"""The agent's default gate (``vision.quality``)."""
BEFORE = GateLimits(min_sharpness=20.0, min_brightness=40.0, max_brightness=220.0, normalise_below=0.0)
"""The gate before the robustness work: raw Laplacian variance, brightness 40-220."""


@dataclass(frozen=True)
class Face:
    id: str
    image: str
    package: str
    box: tuple[float, float, float, float]
    label: str


def load_faces(path: Path = FACES) -> list[Face]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Face(f["id"], f["image"], f["package"], tuple(f["box"]), f["label"]) for f in data["faces"]]


def scene(
    face: Face, media: Path, face_px: int = FACE_PX
) -> tuple[Image, tuple[float, float, float, float]]:
    """The face cut out with context, scaled to ``face_px`` high and centred in a grey frame;
    and its box in the frame (pixels: x, y, w, h)."""
    img = cv2.imread(str(media / face.image), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"robustness_report: {media / face.image} is missing: run `make media`")
    h, w = img.shape[:2]
    bx, by, bw, bh = face.box[0] * w, face.box[1] * h, face.box[2] * w, face.box[3] * h
    scale = face_px / bh
    side = 2.5 * bh
    cx, cy = bx + bw / 2, by + bh / 2
    out_side = round(side * scale)
    m = np.array([[scale, 0, out_side / 2 - cx * scale], [0, scale, out_side / 2 - cy * scale]], np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(
        img,
        m,
        (out_side, out_side),
        flags=interp,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(BACKGROUND,) * 3,
    )
    frame = np.full((FRAME_H, FRAME_W, 3), BACKGROUND, np.uint8)
    x0, y0 = (FRAME_W - out_side) // 2, (FRAME_H - out_side) // 2
    sx0, sy0 = max(0, -x0), max(0, -y0)
    fx0, fy0 = max(0, x0), max(0, y0)
    cw, ch = min(out_side - sx0, FRAME_W - fx0), min(out_side - sy0, FRAME_H - fy0)
    frame[fy0 : fy0 + ch, fx0 : fx0 + cw] = crop[sy0 : sy0 + ch, sx0 : sx0 + cw]
    fw, fh = bw * scale, bh * scale
    return frame, (x0 + out_side / 2 - fw / 2, y0 + out_side / 2 - fh / 2, fw, fh)


# ---- degradations: (frame, level, rng) -> frame -------------------------------------------


def brightness(frame: Image, k: float, rng: np.random.Generator) -> Image:
    return cv2.convertScaleAbs(frame, alpha=k)


def gamma(frame: Image, g: float, rng: np.random.Generator) -> Image:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g, 0, 255).astype(np.uint8)
    return cv2.LUT(frame, lut)


def low_light(frame: Image, k: float, rng: np.random.Generator, auto_gain: bool = False) -> Image:
    """Light cut to ``k``: photon (shot) noise and read noise at the sensor, 8-bit rounding;
    with auto-gain the result is amplified back to the scene's mean level, noise and all."""
    electrons = frame.astype(np.float32) * k
    noisy = electrons + rng.normal(0.0, 1.0, frame.shape) * np.sqrt(np.maximum(electrons, 0) * 0.25 + 1.0)
    dim = np.clip(np.round(noisy), 0, 255)
    if auto_gain:
        dim = np.clip(dim * (float(frame.mean()) / max(float(dim.mean()), 1e-3)), 0, 255)
    return dim.astype(np.uint8)


def noise(frame: Image, sigma: float, rng: np.random.Generator) -> Image:
    return np.clip(frame + rng.normal(0.0, sigma, frame.shape), 0, 255).astype(np.uint8)


def jpeg(frame: Image, quality: float, rng: np.random.Generator) -> Image:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def motion_blur(frame: Image, length: float, rng: np.random.Generator) -> Image:
    n = int(length)
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1.0 / n
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def rotation(frame: Image, degrees: float, rng: np.random.Generator) -> Image:
    m = cv2.getRotationMatrix2D((FRAME_W / 2, FRAME_H / 2), degrees, 1.0)
    return cv2.warpAffine(frame, m, (FRAME_W, FRAME_H), borderValue=(BACKGROUND,) * 3)


def squash(frame: Image, k: float, rng: np.random.Generator) -> Image:
    """A camera mounted high sees faces shorter than wide: scale rows by ``k`` about the centre."""
    m = np.array([[1.0, 0, 0], [0, k, FRAME_H / 2 * (1 - k)]], np.float64)
    return cv2.warpAffine(frame, m, (FRAME_W, FRAME_H), borderValue=(BACKGROUND,) * 3)


def flip(frame: Image, _: float, rng: np.random.Generator) -> Image:
    return np.ascontiguousarray(frame[:, ::-1])


Degrade = Callable[[Image, float, np.random.Generator], Image]
CONDITIONS: dict[str, tuple[tuple[float, ...], Degrade | None]] = {
    "brightness": ((0.05, 0.1, 0.2, 0.3, 0.5, 1.5, 2.0, 3.0), brightness),
    "gamma": ((0.3, 0.5, 2.0, 3.0), gamma),
    "low_light": ((0.3, 0.1, 0.05), low_light),
    "low_light_auto_gain": ((0.3, 0.1, 0.05), lambda f, k, r: low_light(f, k, r, auto_gain=True)),
    "noise": ((10, 20, 40, 60), noise),
    "jpeg_quality": ((40, 20, 10, 5), jpeg),
    "face_height_px": ((16, 24, 32, 48, 64, 128, 160), None),
    "motion_blur_px": ((5, 11, 21, 31), motion_blur),
    "rotation_deg": ((10, 20, 30, 45), rotation),
    "vertical_squash": ((0.9, 0.75, 0.6, 0.5), squash),
    "flip": ((1,), flip),
}
"""Condition -> (levels, degradation). ``face_height_px`` re-composes the scene instead."""


# ---- running the agent's own stages ------------------------------------------------------


@dataclass
class Reading:
    """One face in one degraded frame."""

    detected: bool
    score: float = 0.0
    abstain: str | None = None
    label: str | None = None
    """Top label as the agent publishes it (None: not detected or abstained)."""
    forced: str | None = None
    """Top label had the gate let every detected face through."""
    mirror: str | None = None
    equalise: str | None = None
    sharpness: float = 0.0
    """Raw Laplacian variance (the gate's figure before)."""
    sharpness_denoised: float = 0.0
    """``quality.sharpness_index`` (the gate's figure now)."""
    brightness: float = 0.0


class Agent:
    """The detector and classifier of one precision, as the pipeline opens them."""

    def __init__(self, precision: str, models_dir: Path | None = None) -> None:
        d = models_dir or default_models_dir()
        det = model_spec(d, "face_detection_full_range", precision=precision)
        emo = model_spec(d, "emotion", precision=precision)
        self.detector = FaceDetector(with_float_io(BACKENDS["cpu"].open(det, 1)), det, 0.5, 5)
        self.classifier = EmotionClassifier(with_float_io(BACKENDS["cpu"].open(emo, 1)), emo)

    def top(self, grey: Image) -> tuple[str, npt.NDArray[np.float64]]:
        probs = self.classifier.classify(grey)
        p = np.array([v for _, v in probs])
        return probs[int(np.argmax(p))][0], p

    def read(self, frame: Image, box: tuple[float, float, float, float], variant: str = "after") -> Reading:
        """One face as the agent reads it. ``after``: today's gate (sharpness index, calibrated
        brightness limits, dark crops normalised); ``before``: the gate as it was (raw Laplacian
        variance >= 20, brightness 40-220, no normalisation)."""
        h, w = frame.shape[:2]
        try:
            dets = self.detector.detect(frame)
        finally:
            self.detector.clear()
        det = _match(dets, box, w, h)
        if det is None:
            return Reading(detected=False)
        try:
            grey = self.classifier.align(frame, det).copy()
            index, bright = self.classifier.measure(grey)
            raw = laplacian_variance(grey)
            yaw = yaw_degrees([(x * w, y * h) for x, y in det.keypoints[:3]])
            face_px = min(det.box[2] * w, det.box[3] * h)
            if variant == "before":
                q = gate(face_px, raw, bright, yaw, BEFORE)
                shown = grey
            else:
                q = gate(face_px, index, bright, yaw, LIMITS)
                shown = self.classifier.normalise(grey, bright, LIMITS.normalise_below).copy()
            forced, p = self.top(shown)
            _, pm = self.top(np.ascontiguousarray(shown[:, ::-1]))
            mirror = self.classifier.labels[int(np.argmax(p + pm))]
            eq = cv2.addWeighted(grey, 0.5, cv2.equalizeHist(grey), 0.5, 0.0)
            equalise, _ = self.top(eq)
        finally:
            self.classifier.clear()
        return Reading(
            detected=True,
            score=det.score,
            abstain=q.abstain_reason,
            label=forced if q.passed else None,
            forced=forced,
            mirror=mirror,
            equalise=equalise,
            sharpness=raw,
            sharpness_denoised=index,
            brightness=bright,
        )


def _match(
    dets: list[Detection], box: tuple[float, float, float, float], w: int, h: int
) -> Detection | None:
    """The best detection whose centre lies inside the face's box (frame pixels)."""
    x, y, bw, bh = box
    for d in dets:
        cx, cy = (d.box[0] + d.box[2] / 2) * w, (d.box[1] + d.box[3] / 2) * h
        if x <= cx <= x + bw and y <= cy <= y + bh:
            return d
    return None


def _transform_box(
    name: str, level: float, box: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Where the face's box goes under a geometric degradation (its centre is what matters)."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    if name == "flip":
        cx = FRAME_W - cx
    elif name == "vertical_squash":
        cy, h = FRAME_H / 2 + (cy - FRAME_H / 2) * level, h * level
    elif name == "rotation_deg":
        a = math.radians(level)
        dx, dy = cx - FRAME_W / 2, cy - FRAME_H / 2
        cx = FRAME_W / 2 + dx * math.cos(a) + dy * math.sin(a)
        cy = FRAME_H / 2 - dx * math.sin(a) + dy * math.cos(a)
    return cx - w / 2, cy - h / 2, w, h


def frames(
    face: Face, media: Path, name: str, level: float, seed: int = 0
) -> tuple[Image, tuple[float, float, float, float]]:
    """The degraded frame for one face, condition and level, and the face's box in it."""
    if name == "face_height_px":
        return scene(face, media, int(level))
    frame, box = scene(face, media)
    fn = CONDITIONS[name][1]
    if fn is None:
        raise ValueError(f"{name} has no degradation function")
    return fn(frame, level, np.random.default_rng(seed)), _transform_box(name, level, box)


# ---- aggregation ---------------------------------------------------------------------------


@dataclass
class Row:
    condition: str
    level: float
    precision: str
    faces: int
    detected: int
    read: int
    agree: int
    correct: int
    abstained: int
    justified: int
    forced_correct: int
    mirror_correct: int
    equalise_correct: int
    sharpness: float
    sharpness_denoised: float
    reasons: dict[str, int] = field(default_factory=dict)

    def pct(self, num: int, den: int) -> float | None:
        return round(100.0 * num / den, 1) if den else None


def summarise(  # noqa: PLR0917 - one row's inputs
    condition: str,
    level: float,
    precision: str,
    faces: list[Face],
    readings: list[Reading],
    clean: dict[str, str | None],
) -> Row:
    det = [(f, r) for f, r in zip(faces, readings, strict=True) if r.detected]
    read = [(f, r) for f, r in det if r.label is not None]
    abst = [(f, r) for f, r in det if r.abstain is not None]
    reasons: dict[str, int] = {}
    for _, r in abst:
        reasons[str(r.abstain)] = reasons.get(str(r.abstain), 0) + 1
    return Row(
        condition,
        level,
        precision,
        len(faces),
        len(det),
        len(read),
        sum(r.label == clean.get(f.id) for f, r in read),
        sum(r.label == f.label for f, r in read),
        len(abst),
        sum(r.forced != f.label for f, r in abst),
        sum(r.forced == f.label for f, r in det),
        sum(r.mirror == f.label for f, r in det),
        sum(r.equalise == f.label for f, r in det),
        round(statistics.median([r.sharpness for _, r in det]), 1) if det else 0.0,
        round(statistics.median([r.sharpness_denoised for _, r in det]), 1) if det else 0.0,
        reasons,
    )


def run(
    precisions: list[str],
    conditions: dict[str, tuple[float, ...]],
    media: Path = MEDIA,
    faces: list[Face] | None = None,
    variants: tuple[str, ...] = ("after",),
) -> list[Row]:
    """Every condition and level, per precision and gate variant (``before`` / ``after``)."""
    faces = faces if faces is not None else load_faces()
    rows: list[Row] = []
    for precision in precisions:
        agent = Agent(precision)
        for variant in variants:
            tag = precision if variants == ("after",) else f"{precision} {variant}"
            clean_readings = [agent.read(*scene(f, media), variant=variant) for f in faces]
            clean = {f.id: r.label for f, r in zip(faces, clean_readings, strict=True)}
            rows.append(summarise("clean", 0, tag, faces, clean_readings, clean))
            for name, levels in conditions.items():
                for level in levels:
                    readings = [
                        agent.read(*frames(f, media, name, level, seed=i), variant=variant)
                        for i, f in enumerate(faces)
                    ]
                    rows.append(summarise(name, level, tag, faces, readings, clean))
    return rows


# ---- output --------------------------------------------------------------------------------


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def render_markdown(rows: list[Row]) -> str:
    head = (
        "| condition | level | precision | detected % | agree % | correct % | abstain % | justified % "
        "| forced correct | mirror correct | equalise correct | sharpness | denoised sharpness |"
    )
    out = [head, "|" + "---|" * 13]
    for r in rows:
        out.append(
            f"| {r.condition} | {r.level:g} | {r.precision} | {_cell(r.pct(r.detected, r.faces))} "
            f"| {_cell(r.pct(r.agree, r.read))} | {_cell(r.pct(r.correct, r.read))} "
            f"| {_cell(r.pct(r.abstained, r.detected))} | {_cell(r.pct(r.justified, r.abstained))} "
            f"| {r.forced_correct}/{r.detected} | {r.mirror_correct}/{r.detected} "
            f"| {r.equalise_correct}/{r.detected} "
            f"| {r.sharpness:g} | {r.sharpness_denoised:g} |"
        )
    return "\n".join(out) + "\n"


METRICS = {"detected": "#1f77b4", "correct": "#2ca02c", "abstain": "#d62728"}
DASHES = ("", "6 3", "2 2", "8 2 2 2")


def _metric(r: Row, metric: str) -> tuple[int, int]:
    return {"detected": (r.detected, r.faces), "correct": (r.correct, r.read),
            "abstain": (r.abstained, r.detected)}[metric]


def render_svg(condition: str, rows: list[Row]) -> str:
    """One line chart: detected %, correct % (of faces read) and abstain % per level, one
    line style per precision (and gate variant)."""
    mine = [r for r in rows if r.condition == condition]
    levels = sorted({r.level for r in mine})
    tags = list(dict.fromkeys(r.precision for r in mine))
    w, h, pad, right = 660, 260, 40, 190
    xs = {lv: pad + (w - pad - right) * (i / max(1, len(levels) - 1)) for i, lv in enumerate(levels)}

    def y(v: float) -> float:
        return h - pad - (h - 2 * pad) * v / 100.0

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{(w - right) / 2}" y="16" text-anchor="middle" font-size="13">{condition}</text>',
        f'<line x1="{pad}" y1="{y(0)}" x2="{w - right}" y2="{y(0)}" stroke="black"/>',
        f'<line x1="{pad}" y1="{y(0)}" x2="{pad}" y2="{y(100)}" stroke="black"/>',
    ]
    for v in (0, 50, 100):
        parts.append(f'<text x="{pad - 4}" y="{y(v) + 4}" text-anchor="end">{v}%</text>')
    for lv, x in xs.items():
        parts.append(f'<text x="{x:.1f}" y="{h - pad + 14}" text-anchor="middle">{lv:g}</text>')
    legend_y = 30
    for t, tag in enumerate(tags):
        for metric, colour in METRICS.items():
            pts = []
            for r in sorted((r for r in mine if r.precision == tag), key=lambda r: r.level):
                num, den = _metric(r, metric)
                if den:
                    pts.append(f"{xs[r.level]:.1f},{y(100.0 * num / den):.1f}")
            if not pts:
                continue
            dash = f' stroke-dasharray="{DASHES[t % len(DASHES)]}"' if t else ""
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{" ".join(pts)}"/>'
            )
            parts.append(
                f'<line x1="{w - right + 8}" y1="{legend_y - 4}" x2="{w - right + 28}" y2="{legend_y - 4}" '
                f'stroke="{colour}" stroke-width="2"{dash}/>'
            )
            parts.append(f'<text x="{w - right + 32}" y="{legend_y}" font-size="10">{tag} {metric}</text>')
            legend_y += 13
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--media", type=Path, default=MEDIA, help="pinned media folder (make media)")
    parser.add_argument("--out", type=Path, help="write robustness.md and one SVG per condition here")
    parser.add_argument("--precision", action="append", choices=["float", "int8"], help="default: both")
    parser.add_argument("--condition", action="append", choices=sorted(CONDITIONS), help="default: all")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of Markdown")
    parser.add_argument(
        "--before", action="store_true", help="also score the gate as it was before (docs/vision.md)"
    )
    args = parser.parse_args(argv)
    conditions = {c: CONDITIONS[c][0] for c in (args.condition or CONDITIONS)}
    variants = ("before", "after") if args.before else ("after",)
    rows = run(args.precision or ["float", "int8"], conditions, args.media, variants=variants)
    if args.json:
        print(json.dumps({"faces": len(load_faces()), "rows": [asdict(r) for r in rows]}))
        return 0
    text = render_markdown(rows)
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "robustness.md").write_text(text, encoding="utf-8")
        for c in conditions:
            (args.out / f"robustness-{c}.svg").write_text(render_svg(c, rows), encoding="utf-8")
    return 0


def iter_conditions() -> Iterator[str]:
    yield from CONDITIONS


if __name__ == "__main__":
    sys.exit(main())
