"""The models manifest: which file each model is, its sha256, and how to feed it.

``models/manifest.json`` is written by ``tools/rebuild_models.py`` from pinned wheels. Every
model is hashed before it is loaded: a missing or altered file is refused with a
``ModelError`` that names the file, the expected and found hash, and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ModelError

MANIFEST_NAME = "manifest.json"
REBUILD_HINT = (
    "restore the vendored models: in a source checkout run `python tools/rebuild_models.py`; "
    "on an installed device reinstall the package (`sudo tools/install`, docs/installing.md)"
)


MODELS_ENV = "EMOTION_AGENT_MODELS"
"""Environment variable naming a models folder; ``vision.models_dir`` in the config wins over it."""


def checkout_models_dir() -> Path:
    """The top-level ``models/`` of a source checkout (``pip install -e .`` or PYTHONPATH)."""
    return Path(__file__).resolve().parents[2] / "models"


def installed_models_dir() -> Path:
    """Where a wheel puts the models: ``models/`` is packaged as ``agent._models`` (setup.py)."""
    return Path(__file__).resolve().parents[1] / "_models"


def default_models_dir() -> Path:
    """The models folder when the config sets no ``vision.models_dir``.

    ``$EMOTION_AGENT_MODELS`` if set (taken as is, so a wrong path fails loudly instead of
    falling back), else the checkout's ``models/`` if it has a manifest, else the copy inside
    the installed package."""
    override = os.environ.get(MODELS_ENV)
    if override:
        return Path(override)
    checkout = checkout_models_dir()
    if (checkout / MANIFEST_NAME).is_file():
        return checkout
    return installed_models_dir()


@dataclass(frozen=True)
class AnchorSpec:
    """MediaPipe ``SsdAnchorsCalculator`` options for one BlazeFace model."""

    input_size: int
    strides: tuple[int, ...]
    anchor_offset: float
    interpolated_scale_aspect_ratio: float
    num_anchors: int


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry, checked and ready to load."""

    name: str
    path: Path
    sha256: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    softmax_output: bool
    anchors: AnchorSpec | None
    score_clip: float
    min_score: float
    nms_threshold: float
    edgetpu_path: Path | None
    edgetpu_sha256: str | None
    precision: str = "float"
    """``float`` (the vendored file) or a ``variants`` key such as ``int8`` (docs/quantization.md)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, expected: str) -> Path:
    """Return ``path`` if its sha256 is ``expected``; else raise a ModelError saying how to fix it."""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing (expected sha256 {expected}); {REBUILD_HINT}")
    try:
        found = sha256_of(path)
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc}; {REBUILD_HINT}") from exc
    if found != expected:
        raise ModelError(
            f"model file {path} has sha256 {found}, but the manifest expects {expected}; "
            f"the file was altered or replaced. {REBUILD_HINT}"
        )
    return path


def load_manifest(models_dir: Path) -> dict[str, Any]:
    path = models_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"models manifest {path} is missing; {REBUILD_HINT}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"models manifest {path} cannot be read: {exc}; {REBUILD_HINT}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ModelError(f"models manifest {path} has no 'models' mapping; {REBUILD_HINT}")
    return data


def detector_input_side(models_dir: Path | None, detector: str) -> int | None:
    """The square input side of ``face_detection_<detector>`` from the manifest (no model is
    opened): what a camera that scales in hardware is asked for. None when the manifest cannot
    say, in which case the pipeline's own load reports why."""
    try:
        entry = load_manifest(models_dir or default_models_dir())["models"][f"face_detection_{detector}"]
        anchors = _anchors(entry)
    except (ModelError, KeyError, TypeError, ValueError):
        return None
    return None if anchors is None else anchors.input_size


def _anchors(entry: dict[str, Any]) -> AnchorSpec | None:
    a = entry.get("anchors")
    if a is None:
        return None
    return AnchorSpec(
        input_size=int(a["input_size"]),
        strides=tuple(int(s) for s in a["strides"]),
        anchor_offset=float(a["anchor_offset"]),
        interpolated_scale_aspect_ratio=float(a["interpolated_scale_aspect_ratio"]),
        num_anchors=int(a["num_anchors"]),
    )


def _variant(models_dir: Path, name: str, entry: dict[str, Any], precision: str) -> dict[str, Any]:
    """The file, sha256 and Edge TPU fields of one precision of an entry (``float``: the entry)."""
    if precision == "float":
        return entry
    variant = (entry.get("variants") or {}).get(precision)
    if not isinstance(variant, dict):
        have = ", ".join(["float", *sorted(entry.get("variants") or {})])
        raise ModelError(
            f"{models_dir / MANIFEST_NAME}: model {name!r} has no {precision} variant (it has: {have}); "
            "run `tools/quantize_models.py` (docs/quantization.md) or set vision.precision to float"
        )
    return variant


def model_spec(models_dir: Path, name: str, *, verify: bool = True, precision: str = "float") -> ModelSpec:
    """Read one entry of the manifest in ``models_dir`` and check its file's sha256.

    ``precision`` picks the vendored file (``float``) or one of the entry's ``variants``."""
    manifest = load_manifest(models_dir)
    entry = manifest["models"].get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(manifest["models"]))
        raise ModelError(f"{models_dir / MANIFEST_NAME} has no model {name!r} (it has: {known})")
    try:
        chosen = _variant(models_dir, name, entry, precision)
        path = models_dir / str(chosen["file"])
        decode = entry.get("decode", {})
        edgetpu = chosen.get("edgetpu") or {}
        spec = ModelSpec(
            name=name,
            path=path,
            sha256=str(chosen["sha256"]),
            input_shape=tuple(int(d) for d in entry["input"]["shape"]),
            labels=tuple(str(x) for x in entry.get("labels", ())),
            softmax_output=entry.get("output_activation") == "softmax",
            anchors=_anchors(entry),
            score_clip=float(decode.get("score_clip", 100.0)),
            min_score=float(decode.get("min_score", 0.5)),
            nms_threshold=float(decode.get("nms", {}).get("min_suppression_threshold", 0.3)),
            edgetpu_path=models_dir / str(edgetpu["file"]) if "file" in edgetpu else None,
            edgetpu_sha256=str(edgetpu["sha256"]) if "sha256" in edgetpu else None,
            precision=precision,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{models_dir / MANIFEST_NAME}: entry {name!r} is malformed ({exc!r}); {REBUILD_HINT}"
        ) from exc
    if verify:
        verify_file(spec.path, spec.sha256)
    return spec
