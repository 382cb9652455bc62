"""What a SIGHUP reload must redo, decided from the changed keys alone (pure logic).

A reload must never publish a closed window again nor publish a window under a new sequence
number (issue 18): only a change to what is counted closes the open window (early, flagged
``closed_by: reload``) and starts the next with the new settings; a file source is reopened
only when ``camera.source`` itself changed, since reopening replays it from its start.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTING = ("analytics", "camera", "vision", "policy.zones", "policy.min_face_height")
"""Keys whose change alters what a window counts."""
NOT_COUNTING = ("analytics.alerts", "analytics.baseline")
"""Read after a window closes: they never need the open window closed."""
SOURCE_SHAPING = ("camera", "vision.detector", "vision.models_dir")
"""Keys that change what the source is asked for: the detector's input side sizes picamera2's
lores stream (``agent.processing.source_options``), so a live camera is reopened for it."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    close_window: bool
    """Close the open window now and rebuild tracker, windows and vision stage."""
    new_pipeline: bool
    """``vision`` changed: load the models again."""
    reopen_source: bool
    """Open the camera again: ``camera.source`` changed, or any camera key (or the detector,
    which sizes the lores stream) of a live camera."""
    retune_source: bool
    """Other such keys of a file: applied without reopening it."""


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def plan_reload(keys: list[str], *, live: bool) -> ReloadPlan:
    counting = [k for k in keys if _under(k, COUNTING) and not _under(k, NOT_COUNTING)]
    camera = [k for k in keys if _under(k, SOURCE_SHAPING)]
    reopen = "camera.source" in camera or (live and bool(camera))
    return ReloadPlan(
        close_window=bool(counting),
        new_pipeline=any(_under(k, ("vision",)) for k in keys),
        reopen_source=reopen,
        retune_source=bool(camera) and not reopen,
    )
