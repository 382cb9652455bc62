"""The models manifest: which file each model is, its sha256, and how to feed it.

``models/manifest.json`` is written by ``tools/rebuild_models.py`` from pinned wheels. Every
model is hashed before it is loaded: a missing or altered file is refused with a
``ModelError`` that names the file, the expected and found hash, and the fix. An entry that asks
for an input this code does not feed (another dtype, colour or pixel range) or a manifest of
another ``manifest_version`` is refused too, instead of the model silently getting our own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.emotions import EMOTIONS
from agent.errors import ModelError
from agent.user_files import read_user_bytes

MANIFEST_NAME = "manifest.json"
REBUILD_HINT = (
    "restore the vendored models: in a source checkout run `python tools/rebuild_models.py`; "
    "on an installed device reinstall the package (`sudo tools/install`, docs/installing.md)"
)


MANIFEST_VERSION = 1
"""The manifest layout this code reads (tools/rebuild_models.py writes it); a newer one may ask
for what this code does not do, so it is refused rather than half read."""
EMOTION_MODEL = "emotion"
"""The entry the pipeline opens as its emotion classifier (fed grey crops); the face detectors
are the ``face_detection_*`` entries (fed RGB)."""
INPUT_DTYPE = "float32"
INPUT_RANGE = (-1.0, 1.0)
"""What every model is fed: float32 pixels scaled x / 127.5 - 1 (``runtime.to_unit_range``; an
int8 variant's tensors are (de)quantized from that by ``precision.with_float_io``)."""


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


def models_folder(configured: str | Path | None) -> Path:
    """The models folder to load: ``vision.models_dir`` (``configured``) when set, else
    ``default_models_dir``. A folder the installer named (the setting, or
    ``$EMOTION_AGENT_MODELS``) that holds no manifest is refused naming that setting: the error
    about the missing manifest told an installer who mistyped the path to rebuild the models or
    reinstall the agent (found by a new-user trial)."""
    override = os.environ.get(MODELS_ENV)
    folder = Path(configured) if configured is not None else default_models_dir()
    named = "vision.models_dir" if configured is not None else f"${MODELS_ENV}" if override else None
    if named is not None and not (folder / MANIFEST_NAME).is_file():
        state = "does not exist" if not folder.exists() else f"holds no {MANIFEST_NAME}"
        raise ModelError(
            f"{named} is {str(folder)!r}, which {state}: set it to a models folder (one holding "
            f"{MANIFEST_NAME} and the model files it lists), or {'remove' if configured else 'unset'} "
            "it to use the models installed with the agent"
        )
    return folder


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
        what = "is not a regular file" if path.exists() else "is missing"  # a folder, a device
        raise ModelError(f"model file {path} {what} (expected sha256 {expected}); {REBUILD_HINT}")
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


MAX_MANIFEST_BYTES = 1024 * 1024
"""The vendored manifest is about 8 KB; one with every variant stays far below this."""


MAX_DIGITS = 100


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _integer(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits (at most {MAX_DIGITS})")
    return int(text)


def load_manifest(models_dir: Path) -> dict[str, Any]:
    """The manifest of ``models_dir``: a regular file of at most 1 MiB (a FIFO or device in its
    place is refused, never waited on) holding a JSON object with a ``models`` mapping."""
    path = models_dir / MANIFEST_NAME
    data = read_user_bytes(
        path, "models manifest", ModelError, max_bytes=MAX_MANIFEST_BYTES, missing_hint=f"; {REBUILD_HINT}"
    )
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constant, parse_int=_integer)
    except RecursionError:
        raise ModelError(
            f"models manifest {path} cannot be read: nested too deeply; {REBUILD_HINT}"
        ) from None
    except ValueError as exc:  # not UTF-8, not JSON, NaN or Infinity, a number of 101 digits
        raise ModelError(f"models manifest {path} cannot be read: {exc}; {REBUILD_HINT}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ModelError(f"models manifest {path} has no 'models' mapping; {REBUILD_HINT}")
    _check_version(path, manifest)
    return manifest


def _check_version(path: Path, manifest: dict[str, Any]) -> None:
    """A manifest of another layout (a newer agent's) is refused: its fields may mean what this
    code does not implement."""
    if "manifest_version" not in manifest:
        found = "no manifest_version"
    else:
        version = manifest["manifest_version"]
        if type(version) in (int, float) and version == MANIFEST_VERSION:  # not True, not "1"
            return
        found = f"manifest_version {_shown(version)}"
    raise ModelError(
        f"models manifest {path} has {found}; this agent reads manifest_version {MANIFEST_VERSION} only "
        f"(allowed: {MANIFEST_VERSION}): use the agent these models came with, or {REBUILD_HINT}"
    )


def manifest_entry(models_dir: Path, name: str) -> dict[str, Any]:
    """Entry ``name`` of the manifest, or an empty mapping when it has none (or a non-mapping)."""
    entry = load_manifest(models_dir)["models"].get(name)
    return entry if isinstance(entry, dict) else {}


def int8_variant(entry: dict[str, Any]) -> dict[str, Any] | None:
    variants = entry.get("variants")
    variant = variants.get("int8") if isinstance(variants, dict) else None
    return variant if isinstance(variant, dict) else None


MALFORMED = (KeyError, TypeError, ValueError, OverflowError, AttributeError)
"""What reading a field of the wrong type or value raises (``int(inf)``: OverflowError)."""
MAX_INPUT_SIDE = 4096
MAX_DIMS = 8
MAX_ASPECT = 10.0
MAX_SCORE_CLIP = 700.0
"""Logits are clipped to +-this before the sigmoid (BlazeFace's 100); ``math.exp`` overflows past 709."""


def detector_input_side(models_dir: Path | None, detector: str) -> int | None:
    """The square input side of ``face_detection_<detector>`` from the manifest (no model is
    opened): what a camera that scales in hardware is asked for. None when the manifest cannot
    say, in which case the pipeline's own load reports why."""
    try:
        entry = load_manifest(models_dir or default_models_dir())["models"][f"face_detection_{detector}"]
        anchors = _anchors(entry)
    except (ModelError, *MALFORMED):
        return None
    return None if anchors is None else anchors.input_size


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"is {type(value).__name__} {_shown(value)}, not a mapping")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _count(value: Any, low: int, high: int) -> int:
    """An integer from ``low`` to ``high`` (a JSON number such as 192.0 counts as 192)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"is {_shown(value)}, not an integer")
    if value != int(value):
        raise TypeError(f"is {_shown(value)}, not an integer")
    if not low <= value <= high:
        raise ValueError(f"is {_shown(value)}, not from {low} to {high}")
    return int(value)


def _real(
    value: Any, low: float, high: float, *, below_high: bool = False, above_low: bool = False, what: str = ""
) -> float:
    """A finite JSON number from ``low`` to ``high`` (``below_high``, ``above_low``: strictly);
    a string such as "NaN", which ``float()`` would take, is refused. ``what``: the key, for a
    field that holds several."""
    found = f"{what} is {_shown(value)}".lstrip()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{found}, not a finite number")
    if not low <= value <= high or (below_high and value == high) or (above_low and value == low):
        lower = f"above {low}" if above_low else f"at least {low}"
        upper = f"below {high}" if below_high else f"at most {high}"
        allowed = f"{lower} and {upper}" if below_high or above_low else f"from {low} to {high}"
        raise ValueError(f"{found}, not {allowed}")
    return float(value)


def _dims(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_DIMS:
        raise TypeError(f"is {_shown(value)}, not a list of 1 to {MAX_DIMS} dimensions")
    return tuple(_count(d, 1, MAX_INPUT_SIDE) for d in value)


def _anchors(entry: dict[str, Any]) -> AnchorSpec | None:
    a = entry.get("anchors")
    if a is None:
        return None
    a = _mapping(a)
    size = _count(a["input_size"], 1, MAX_INPUT_SIDE)
    strides = a["strides"]
    if not isinstance(strides, list) or not 1 <= len(strides) <= MAX_DIMS:
        raise ValueError(f"strides is {_shown(strides)}, not a list of 1 to {MAX_DIMS} strides")
    return AnchorSpec(
        input_size=size,
        strides=tuple(_count(st, 1, size) for st in strides),
        anchor_offset=_real(a["anchor_offset"], 0.0, 1.0, what="anchor_offset"),  # where in its cell
        interpolated_scale_aspect_ratio=_real(
            a["interpolated_scale_aspect_ratio"], 0.0, MAX_ASPECT, what="interpolated_scale_aspect_ratio"
        ),
        num_anchors=_count(a["num_anchors"], 1, 10 * size * size),
    )


def _variant(models_dir: Path, name: str, entry: dict[str, Any], precision: str) -> dict[str, Any]:
    """The file, sha256 and Edge TPU fields of one precision of an entry (``float``: the entry)."""
    if precision == "float":
        return entry
    variants = entry.get("variants")
    variant = variants.get(precision) if isinstance(variants, dict) else None
    if not isinstance(variant, dict):
        usable = variants.items() if isinstance(variants, dict) else ()
        have = ", ".join(["float", *sorted(k for k, v in usable if isinstance(v, dict))])
        raise ModelError(
            f"{models_dir / MANIFEST_NAME}: model {name!r} has no {precision} variant (it has: {have}); "
            "run `tools/quantize_models.py` (docs/quantization.md) or set vision.precision to float"
        )
    return variant


def _file_name(value: Any) -> str:
    """A model file is named by its name in the models folder: a path (``../../etc/passwd``,
    ``/dev/zero``), a dot name or a NUL would read something else than the folder's models."""
    name = str(value) if isinstance(value, str) else ""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{_shown(value)} is not a file name (a model file is in the models folder)")
    return name


def _labels(value: Any) -> tuple[str, ...]:
    """The emotion model's output names: emotions only, each once (they are what the agent
    counts and publishes; any other name, such as a sex or an age, is not inferred here)."""
    if not isinstance(value, list):
        raise TypeError(f"is {type(value).__name__} {_shown(value)}, not a list")
    seen: list[str] = []
    for label in value:
        if label not in EMOTIONS:
            raise ValueError(f"has {_shown(label)}, not an emotion ({', '.join(EMOTIONS)})")
        if label in seen:
            raise ValueError(f"has {_shown(label)} twice")
        seen.append(label)
    return tuple(seen)


class _Unsupported(ValueError):
    """A field that is well formed but asks for what this code does not do (another input dtype,
    colour or pixel range): the model would be fed the agent's own conventions regardless."""


def _fed_colours(name: str) -> tuple[tuple[str, ...], str]:
    """The colours the agent may feed the model it opens as ``name``, and why: the detectors RGB
    (converted from the camera's BGR), the emotion model grey crops; an entry it never opens
    (only ``selfcheck`` runs it) may say either."""
    if name == EMOTION_MODEL:
        return ("GREY",), "the emotion model is fed grey face crops"
    if name.startswith("face_detection_"):
        return ("RGB",), "a face detector is fed RGB frames"
    return ("RGB", "GREY"), "what the agent feeds a model"


def _one_of(value: Any, allowed: tuple[str, ...], why: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        said = ", ".join(repr(a) for a in allowed)
        raise _Unsupported(f"is {_shown(value)}; allowed: {said} ({why})")
    return value


def _unit_range(value: Any) -> tuple[float, float]:
    numbers = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not numbers or tuple(float(v) for v in value) != INPUT_RANGE:
        low, high = INPUT_RANGE
        raise _Unsupported(f"is {_shown(value)}; allowed: [{low}, {high}] (pixels are scaled x / 127.5 - 1)")
    return INPUT_RANGE


def _why(exc: Exception) -> str:
    return f"{exc.args[0]!r} is missing" if isinstance(exc, KeyError) else str(exc)


def model_spec(models_dir: Path, name: str, *, verify: bool = True, precision: str = "float") -> ModelSpec:
    """Read one entry of the manifest in ``models_dir`` and check its file's sha256.

    ``precision`` picks the vendored file (``float``) or one of the entry's ``variants``. A
    field missing or of the wrong type or value is a ModelError naming the entry and field."""
    manifest = load_manifest(models_dir)
    entry = manifest["models"].get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(manifest["models"]))
        raise ModelError(f"{models_dir / MANIFEST_NAME} has no model {name!r} (it has: {known})")
    chosen = _variant(models_dir, name, entry, precision)
    decode = entry.get("decode", {})
    edgetpu = chosen.get("edgetpu") or {}
    fields: dict[str, Callable[[], Any]] = {
        "file": lambda: models_dir / _file_name(chosen["file"]),
        "sha256": lambda: str(chosen["sha256"]),
        "input.shape": lambda: _dims(_mapping(entry["input"])["shape"]),
        "input.dtype": lambda: _one_of(entry["input"]["dtype"], (INPUT_DTYPE,), "the agent feeds float32"),
        "input.color": lambda: _one_of(entry["input"]["color"], *_fed_colours(name)),
        "input.range": lambda: _unit_range(entry["input"]["range"]),
        "labels": lambda: _labels(entry.get("labels", [])),
        "anchors": lambda: _anchors(entry),
        "decode": lambda: _mapping(decode),
        "decode.score_clip": lambda: _real(decode.get("score_clip", 100.0), 1.0, MAX_SCORE_CLIP),
        # a score of 0 or 1 is a logit of -inf or +inf (``logit_threshold``), as the config refuses
        "decode.min_score": lambda: _real(
            decode.get("min_score", 0.5), 0.0, 1.0, above_low=True, below_high=True
        ),
        "decode.nms": lambda: _real(
            _mapping(decode.get("nms", {})).get("min_suppression_threshold", 0.3), 0.0, 1.0, below_high=True
        ),
        "edgetpu": lambda: _mapping(edgetpu),
        "edgetpu.file": lambda: models_dir / _file_name(edgetpu["file"]) if "file" in edgetpu else None,
        "edgetpu.sha256": lambda: str(edgetpu["sha256"]) if "sha256" in edgetpu else None,
    }
    read: dict[str, Any] = {}
    for field, value in fields.items():
        try:
            read[field] = value()
        except _Unsupported as exc:
            raise ModelError(
                f"{models_dir / MANIFEST_NAME}: entry {name!r} asks for what this agent does not "
                f"implement: {field} {exc}; {REBUILD_HINT}"
            ) from exc
        except MALFORMED as exc:
            raise ModelError(
                f"{models_dir / MANIFEST_NAME}: entry {name!r} is malformed: {field} {_why(exc)}; "
                f"{REBUILD_HINT}"
            ) from exc
    spec = ModelSpec(
        name=name,
        path=read["file"],
        sha256=read["sha256"],
        input_shape=read["input.shape"],
        labels=read["labels"],
        softmax_output=entry.get("output_activation") == "softmax",
        anchors=read["anchors"],
        score_clip=read["decode.score_clip"],
        min_score=read["decode.min_score"],
        nms_threshold=read["decode.nms"],
        edgetpu_path=read["edgetpu.file"],
        edgetpu_sha256=read["edgetpu.sha256"],
        precision=precision,
    )
    if verify:
        verify_file(spec.path, spec.sha256)
    return spec
