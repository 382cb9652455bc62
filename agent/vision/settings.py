"""Config sections of the vision stage that live apart from ``agent/config.py`` (pure pydantic:
importing them loads no cv2 or runtime)."""

from __future__ import annotations

from pydantic import Field

from agent.settings_base import Section


class GatingSettings(Section):
    """``vision.gating``: change gate, emotion re-read schedule, CPU budget."""

    enabled: bool = Field(
        True, title="Gate face detection on scene change",
        description="Skip the detector while the scene is static and nobody was seen (docs/quantization.md).",
    )
    thumb_width: int = Field(32, ge=8, le=64, title="Change thumbnail width (cells)")
    thumb_height: int = Field(18, ge=4, le=64, title="Change thumbnail height (cells)")
    pixel_delta: int = Field(
        8, ge=1, le=128, title="Grey levels a cell must move to count as change",
        description="Sensor noise moves a cell's mean by under 1 level (demo clip, +-3 noise per pixel).",
    )
    min_changed_cells: int = Field(1, ge=1, le=4096, title="Changed cells that wake the detector")
    refresh_seconds: float = Field(
        5.0, gt=0, le=600, title="Detect at least this often (s), even in a static scene"
    )
    emotion_every_frames: int = Field(
        1, ge=1, le=100, title="Re-read a face's emotion every N frames",
        description="1 reads every frame; N > 1 reuses a face's last reading while its box stays put.",
    )
    emotion_min_iou: float = Field(
        0.6, gt=0, le=1, title="Box overlap under which a face counts as changed (re-read at once)"
    )
    cpu_budget: float = Field(
        1.0, gt=0, le=8, title="CPU share (cores) the vision stage may use",
        description=(
            "Frames beyond it are dropped (counted); 1.0 = one core, 0.25 = a quarter of one. Measured"
            " as the process's CPU time while a frame is analysed, so camera decoding or MQTT work at"
            " the same moment counts too: the budget errs on the side of dropping."
        ),
    )
