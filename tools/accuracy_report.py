#!/usr/bin/env python3
"""How far the int8 models drift from the float ones, on the same real images.

    python tools/accuracy_report.py            # text report
    python tools/accuracy_report.py --json     # one JSON object
    python tools/accuracy_report.py --write    # also record the verdicts in models/manifest.json

Images (none of them mirrored: ``tools/quantize_models.py`` calibrated on mirrored copies):
astronaut.png and group6.jpg as they are; composites (the astronaut's head pasted into the
demo lobby at three sizes, the group photo at three scales); every frame of the demo clip
(``tools/make_sample.py``, rendered in memory).

- Detector (each of short and full range): the float and int8 detections of each image are
  matched greedily by IoU >= 0.5. ``missed``: faces float found and int8 did not; ``extra``:
  the reverse.
- Emotion: on the faces the float full-range detector finds and the quality gate passes, the
  same aligned crop goes to the float and the int8 classifier: top-1 agreement and the mean
  absolute difference of the seven probabilities.

Goal (issue 9): at most 1 point of top-1 drift (agreement >= 99 %) and no extra missed face.
A model that misses it is marked ``meets_goal: false``, and ``vision.precision: auto`` then
keeps it on float. Runs with the agent's own venv; writes nothing unless ``--write``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import make_sample  # noqa: E402 - tools/ is not a package

from agent.vision.detector import FaceDetector  # noqa: E402
from agent.vision.emotion import EmotionClassifier  # noqa: E402
from agent.vision.manifest import default_models_dir, load_manifest, model_spec  # noqa: E402
from agent.vision.observation import Detection  # noqa: E402
from agent.vision.precision import with_float_io  # noqa: E402
from agent.vision.quality import GateLimits, gate, yaw_degrees  # noqa: E402
from agent.vision.runtime import BACKENDS  # noqa: E402

Image = npt.NDArray[np.uint8]
MEDIA = ROOT / ".cache" / "media"
MIN_IOU = 0.5
GOAL_TOP1_DRIFT_POINTS = 1.0
GOAL_EXTRA_MISSED = 0
LIMITS = GateLimits(min_face_px=24, min_sharpness=0.6, min_brightness=40.0, max_brightness=220.0,
                    max_yaw_degrees=35.0)


def _read(media: Path, name: str) -> Image:
    img = cv2.imread(str(media / name), cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"accuracy_report: {media / name} is missing: run `make media` (tools/fetch_media.py)")
    return np.asarray(img, np.uint8)


def images(media: Path = MEDIA) -> Iterator[tuple[str, Image]]:
    """(name, BGR frame) for every evaluated image."""
    yield "astronaut", _read(media, "astronaut.png")
    group = _read(media, "group6.jpg")
    yield "group6", group
    scene = make_sample.Scene.load(media)
    for scale in (0.6, 1.0, 1.4):
        person = cv2.resize(scene.person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(scene.mask, person.shape[1::-1], interpolation=cv2.INTER_LINEAR)[:, :, None]
        frame = scene.background.copy()
        y = max(0, make_sample.HEIGHT - person.shape[0] - 10)
        person, mask = person[: make_sample.HEIGHT - y], mask[: make_sample.HEIGHT - y]
        make_sample.paste(frame, person, mask, 200, y)
        yield f"composite-astronaut-x{scale}", frame
    for scale in (0.35, 0.52, 0.8):
        small = cv2.resize(group, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        yield f"composite-group-x{scale}", small
    tl = make_sample.timeline(20.0)
    for i in range(len(tl.people_per_frame)):
        yield f"clip-{i:03d}", make_sample.render(i, tl, scene)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(ref: list[Detection], other: list[Detection]) -> tuple[int, int, int]:
    """(matched, missed, extra): greedy one-to-one matching by IoU >= 0.5, best pairs first."""
    pairs = sorted(
        ((iou(r.box, o.box), i, j) for i, r in enumerate(ref) for j, o in enumerate(other)), reverse=True
    )
    used_r: set[int] = set()
    used_o: set[int] = set()
    for score, i, j in pairs:
        if score >= MIN_IOU and i not in used_r and j not in used_o:
            used_r.add(i)
            used_o.add(j)
    return len(used_r), len(ref) - len(used_r), len(other) - len(used_o)


@dataclass(frozen=True)
class DetectorResult:
    model: str
    images: int
    float_faces: int
    int8_faces: int
    matched: int
    missed: int
    extra: int
    meets_goal: bool


@dataclass(frozen=True)
class EmotionResult:
    model: str
    faces: int
    top1_agreement_pct: float
    top1_drift_points: float
    mean_abs_prob_diff: float
    max_abs_prob_diff: float
    meets_goal: bool


def _detector(models_dir: Path, name: str, precision: str) -> FaceDetector:
    spec = model_spec(models_dir, name, precision=precision)
    return FaceDetector(with_float_io(BACKENDS["cpu"].open(spec, 1)), spec, 0.5, 20)


def _classifier(models_dir: Path, precision: str) -> EmotionClassifier:
    spec = model_spec(models_dir, "emotion", precision=precision)
    return EmotionClassifier(with_float_io(BACKENDS["cpu"].open(spec, 1)), spec)


def _detect(det: FaceDetector, pixels: Image) -> list[Detection]:
    try:
        return det.detect(pixels)
    finally:
        det.clear()


def compare_detector(models_dir: Path, name: str, frames: list[tuple[str, Image]]) -> DetectorResult:
    f, q = _detector(models_dir, name, "float"), _detector(models_dir, name, "int8")
    totals = np.zeros(5, np.int64)
    for _, pixels in frames:
        ref, got = _detect(f, pixels), _detect(q, pixels)
        totals += (len(ref), len(got), *match(ref, got))
    nf, nq, matched, missed, extra = (int(v) for v in totals)
    return DetectorResult(name, len(frames), nf, nq, matched, missed, extra, missed <= GOAL_EXTRA_MISSED)


def _passes(pixels: Image, det: Detection, clf: EmotionClassifier) -> npt.NDArray[np.uint8] | None:
    h, w = pixels.shape[:2]
    grey = clf.align(pixels, det)
    sharpness, brightness = clf.measure(grey)
    yaw = yaw_degrees([(x * w, y * h) for x, y in det.keypoints[:3]])
    quality = gate(min(det.box[2] * w, det.box[3] * h), sharpness, brightness, yaw, LIMITS)
    return grey if quality.passed else None


def compare_emotion(models_dir: Path, frames: list[tuple[str, Image]]) -> EmotionResult:
    det = _detector(models_dir, "face_detection_full_range", "float")
    f, q = _classifier(models_dir, "float"), _classifier(models_dir, "int8")
    agree, diffs = [], []
    for _, pixels in frames:
        for d in _detect(det, pixels):
            grey = _passes(pixels, d, f)
            if grey is None:
                continue
            pf = np.array([p for _, p in f.classify(grey)])
            pq = np.array([p for _, p in q.classify(grey)])
            f.clear()
            q.clear()
            agree.append(int(pf.argmax() == pq.argmax()))
            diffs.append(np.abs(pf - pq))
        f.clear()
    if not agree:
        sys.exit("accuracy_report: the float detector found no face that passes the quality gate")
    pct = 100.0 * sum(agree) / len(agree)
    d = np.concatenate(diffs)
    drift = round(100.0 - pct, 2)
    return EmotionResult(
        "emotion", len(agree), round(pct, 2), drift, round(float(d.mean()), 4), round(float(d.max()), 4),
        drift <= GOAL_TOP1_DRIFT_POINTS,
    )


def int8_detectors(models_dir: Path) -> list[str]:
    """The detectors whose manifest entry has an int8 variant."""
    models = load_manifest(models_dir)["models"]
    return [
        n for n, e in models.items() if e.get("kind") == "detector" and "int8" in (e.get("variants") or {})
    ]


def report(models_dir: Path, media: Path = MEDIA) -> dict[str, Any]:
    frames = list(images(media))
    dets = [asdict(compare_detector(models_dir, n, frames)) for n in int8_detectors(models_dir)]
    return {
        "images": len(frames),
        "goal": {"top1_drift_points_max": GOAL_TOP1_DRIFT_POINTS, "extra_missed_max": GOAL_EXTRA_MISSED},
        "detectors": dets,
        "emotion": asdict(compare_emotion(models_dir, frames)),
    }


def write_verdicts(models_dir: Path, result: dict[str, Any]) -> None:
    """Record each model's figures and verdict under ``variants.int8.accuracy`` (read by ``auto``)."""
    path = models_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for r in [*result["detectors"], result["emotion"]]:
        figures = {k: v for k, v in r.items() if k != "model"}
        manifest["models"][r["model"]]["variants"]["int8"]["accuracy"] = {
            "tool": "tools/accuracy_report.py", "images": result["images"], **figures
        }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def render_text(result: dict[str, Any]) -> str:
    goal = "goal: <= 1 point top-1 drift, no extra missed face"
    lines = [f"int8 vs float on {result['images']} real images ({goal})"]
    for d in result["detectors"]:
        lines.append(
            f"  {d['model']}: float {d['float_faces']} faces, int8 {d['int8_faces']}; matched {d['matched']} "
            f"(IoU >= 0.5), missed {d['missed']}, extra {d['extra']} -> "
            f"{'meets the goal' if d['meets_goal'] else 'MISSES the goal'}"
        )
    e = result["emotion"]
    lines.append(
        f"  emotion: {e['faces']} faces, top-1 agreement {e['top1_agreement_pct']} % "
        f"(drift {e['top1_drift_points']} points), mean |dp| {e['mean_abs_prob_diff']}, "
        f"max |dp| {e['max_abs_prob_diff']} -> {'meets the goal' if e['meets_goal'] else 'MISSES the goal'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=default_models_dir(), help="models folder")
    parser.add_argument("--media", type=Path, default=MEDIA, help="folder of the pinned media")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--write", action="store_true", help="record the verdicts in the manifest")
    args = parser.parse_args(argv)
    result = report(args.models, args.media)
    print(json.dumps(result) if args.json else render_text(result))
    if args.write:
        write_verdicts(args.models, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
