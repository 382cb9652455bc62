"""Config sections of the vision stage that live apart from ``agent/config.py`` (pure pydantic:
importing them loads no cv2 or runtime)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.settings_base import ConfigPath, Section


class GatingConfig(Section):
    """``vision.gating``: change gate, emotion re-read schedule, CPU budget."""

    enabled: bool = Field(
        True, title="Gate face detection on scene change",
        description="Skip the detector while the scene is static and nobody was seen (docs/quantization.md).",
    )
    thumb_width: int = Field(
        32, ge=8, le=64, title="Change thumbnail width (cells)",
        description="Columns of the grey thumbnail the change gate compares; kept small, zeroed on pause.",
    )
    thumb_height: int = Field(
        18, ge=4, le=64, title="Change thumbnail height (cells)",
        description="Rows of the grey thumbnail the change gate compares.",
    )
    pixel_delta: int = Field(
        8, ge=1, le=128, title="Grey levels a cell must move to count as change",
        description="Sensor noise moves a cell's mean by under 1 level (demo clip, +-3 noise per pixel).",
    )
    min_changed_cells: int = Field(
        1, ge=1, le=4096, title="Changed cells that wake the detector",
        description="How many thumbnail cells must move by pixel_delta before the detector runs again.",
    )
    refresh_seconds: float = Field(
        5.0, gt=0, le=600, title="Detect at least this often (s), even in a static scene",
        description="The detector runs at least this often even when nothing moved and nobody was seen.",
    )
    emotion_every_frames: int = Field(
        1, ge=1, le=100, title="Re-read a face's emotion every N frames",
        description="1 reads every frame; N > 1 reuses a face's last reading while its box stays put.",
    )
    emotion_min_iou: float = Field(
        0.6, gt=0, le=1, title="Box overlap under which a face counts as changed (re-read at once)",
        description="Below this overlap with its last box a face is read again at once.",
    )
    cpu_budget: float = Field(
        1.0, gt=0, le=8, title="CPU share (cores) the vision stage may use",
        description=(
            "Frames beyond it are dropped (counted); 1.0 = one core, 0.25 = a quarter of one. Measured"
            " as the process's CPU time while a frame is analysed, so camera decoding or MQTT work at"
            " the same moment counts too: the budget errs on the side of dropping."
        ),
    )


class QualityConfig(Section):
    """The quality gate: faces that would give wrong readings are counted, never classified."""

    min_face_px: int = Field(
        40, ge=8, le=1024, title="Smallest face side (pixels) to classify",
        description="The shorter side of the face box in source pixels; smaller faces abstain as too_small.",
    )
    min_sharpness: float = Field(
        0.6, ge=0, le=100,
        title="Least edge detail of the face crop (blur below it)",
        description=(
            "Laplacian variance of the Gaussian-smoothed 64 x 64 crop over its grey variance, x 100:"
            " clean faces measure 1.2-2.6, a 31 px motion blur 0.28-0.67; sensor noise and dim light"
            " do not lower it (docs/vision.md)."
        ),
    )
    min_brightness: float = Field(
        10.0, ge=0, le=255, title="Darkest mean grey level accepted",
        description="Crops darker than normalise_below are contrast-normalised first (docs/vision.md).",
    )
    max_brightness: float = Field(
        250.0, ge=0, le=255, title="Brightest mean grey level accepted",
        description="Mean grey level of the face crop above which it abstains as too_bright.",
    )
    normalise_below: float = Field(
        50.0, ge=0, le=255,
        title="Mean grey level under which a face crop is contrast-normalised before classifying",
        description="Blended half and half with its histogram-equalised self (docs/vision.md).",
    )
    max_yaw_degrees: float = Field(
        45.0, ge=0, le=90, title="Largest head turn (estimated from keypoints) accepted",
        description="Estimated from the eye and nose keypoints; beyond it a face abstains as turned.",
    )


class VisionConfig(Section):
    detector: Literal["short_range", "full_range"] = Field(
        "full_range",
        title="Face detector",
        description="full_range finds faces up to ~5 m (lobbies, groups); short_range only within ~2 m.",
    )
    accelerator: Literal["cpu", "coral", "auto"] = Field(
        "auto", title="Inference accelerator", description="auto uses a Coral Edge TPU if present."
    )
    precision: Literal["float", "int8", "auto"] = Field(
        "float",
        title="Model precision",
        description="float: the vendored models; int8: their full-integer variants; auto: per model, "
        "int8 only if its variant met the accuracy goal and a timed probe at start finds it faster "
        "here (docs/quantization.md).",
    )
    threads: int = Field(
        1, ge=1, le=8, title="CPU threads for inference",
        description=(
            "Threads of each model's interpreter, and of OpenCV's resizes; 1 leaves the other cores"
            " free."
        ),
    )
    min_detection_score: float = Field(
        0.5,
        gt=0,
        lt=1,
        title="Least face detection confidence",
        description="0.5 (MediaPipe's default) finds all 6 faces of the test group photo (weakest 0.55); "
        "the highest score on the non-face test images is 0.24 (docs/vision.md).",
    )
    max_faces: int = Field(
        20, ge=1, le=100, title="Most faces analysed in one frame",
        description="The best-scored faces are kept; the others are neither classified nor counted.",
    )
    tiles: int = Field(
        1,
        ge=1,
        le=4,
        title="Detection grid (n x n tiles) besides the whole frame",
        description="1: the whole frame only. 2 or 3: also an n x n grid of overlapping tiles, for "
        "small far faces in large frames (n*n more detector runs per frame; docs/vision.md).",
    )
    models_dir: ConfigPath | None = Field(
        None,
        title="Models folder",
        description="Defaults to $EMOTION_AGENT_MODELS, else the models shipped with the agent "
        "(docs/models.md).",
    )
    quality: QualityConfig = Field(
        default_factory=QualityConfig,
        description="Faces too small, blurred, dark, bright or turned abstain instead of being classified.",
    )
    gating: GatingConfig = Field(
        default_factory=GatingConfig, title="Change gating and CPU budget",
        description="Skip the detector in static empty scenes, reuse recent emotion readings, cap CPU.",
    )
