"""The frame: the only object that ever holds pixels, and only inside a lease.

Pixels are BGR ``uint8`` arrays of shape (height, width, 3), as OpenCV and picamera2's
``RGB888`` format deliver them, or grey (height, width) when the source made the detector's
colour copy itself (``Frame.lores``, ``agent.camera.scaled_copy``): the emotion model reads grey
crops, so past the detector's copy the colour of the full frame is never needed. A Frame is
handed from a camera source to one consumer, used inside ``with lease(frame) as pixels:`` (see
``agent.privacy.lease``), and zeroed on exit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.errors import SourceError

Pixels = npt.NDArray[np.uint8]


@dataclass(eq=False)
class Frame:
    """One captured image, its capture time and its place in the stream."""

    pixels: Pixels
    """BGR (H, W, 3), or grey (H, W) when ``lores`` is the detector's copy (see above)."""
    index: int
    captured_mono: float
    """Monotonic capture time (seconds): the start of the frame's lifetime."""
    timestamp: float
    """Wall-clock capture time (Unix seconds), or the offset into a replayed file."""
    source_time: float | None = field(default=None)
    """Position in a file source (seconds from its start); None for live cameras."""
    lores: Pixels | None = field(default=None)
    """The same image scaled for the detector by the camera itself (picamera2's lores stream,
    the ISP's scaler) or by the source as it decoded (``agent.camera.scaled_copy``), RGB, at the
    size the detector letterboxes the frame to; None when the source has none. The detector
    then skips its own resize; the lease zeroes it with ``pixels``."""
    cpu_scaled: bool = field(default=False)
    """``lores`` was scaled on the CPU from ``pixels`` by the source (a file or OpenCV camera),
    after it blanked ``lores_zones`` in them; False: by a camera's ISP from the raw image."""
    lores_zones: object | None = field(default=None)
    """The privacy zones (the route's ``ZoneMask``) blanked in ``pixels`` before a CPU-scaled
    copy was made, None when there were none. The route reads such a copy only if these are its
    own zones; else the detector resizes the zoned frame itself."""
    detector_read: Callable[[int | None, object | None, bool], None] | None = field(default=None)
    """From a source that scales on the CPU: told, once the frame was analysed, the detector's
    input side if the detector ran on it (else None) and the route's privacy zones. The source
    makes no copy while the change gate keeps skipping the detector (an empty scene), makes them
    again once it runs, at the side of the detector in use (a reload may change it without
    reopening a file), from pixels with those zones blanked. Third: whether the route takes
    grey frames beside the copy (``pixels`` then grey, the colour frame zeroed at once).
    picamera2 listens only to the third: its ISP scales every frame, and with grey frames it
    turns the main stream grey as it copies it out of the camera's buffer."""

    @property
    def stream_time(self) -> float:
        """The video's own monotonic time (s): the position in a file, or the capture time of a
        live camera. Never the wall clock, which may step back."""
        return self.source_time if self.source_time is not None else self.captured_mono

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_grey(pixels: Pixels) -> bool:
    """A grey frame (H, W): its colour went only into the detector's copy (``Frame.lores``)."""
    return pixels.ndim == 2


def check_pixels(pixels: Pixels) -> None:
    """Refuse anything that is not a BGR uint8 H x W x 3 or grey H x W image."""
    ok = isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
    if not ok or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise SourceError(
            "the vision stage needs BGR uint8 H x W x 3 (or grey H x W) pixels, "
            f"got shape {shape} dtype {dtype}"
        )
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise SourceError(
            f"the frame is too small to analyse ({pixels.shape[1]} x {pixels.shape[0]} pixels)"
        )
