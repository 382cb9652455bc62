"""A window's messages leave at a time that does not depend on the faces in view (found by
review): with a live camera they left after the first frame past the window's end had been
analysed, and inference takes longer the more faces there are, so the envelope's ``ts`` minus
the window's end told how many faces were in that frame, even for a window whose figures are
suppressed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.camera.base import SourceInfo
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.frame import Frame
from agent.service import Service
from agent.vision.observation import FaceObservation
from tests.analytics.faces import face
from tests.test_service import NO_GATE, messages, write_config

T0 = 1_800_000_000.0
INFERENCE_S_PER_FACE = 0.005


class LiveSource:
    """A camera at 5 fps on the fake clock."""

    key: ClassVar[str] = "opencv"

    def __init__(self, clock: Clock) -> None:
        self.clock, self.pos = clock, 0

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("opencv", "/dev/video0", 5.0, 64, 36, live=True)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        self.pos += 1
        pixels = np.full((36, 64, 3), 120, dtype=np.uint8)
        return Frame(pixels, self.pos, self.clock.monotonic(), self.clock.time())

    def close(self) -> None:
        pass


class SlowerWithFaces:
    """Inference that takes longer with more faces, as the real one does; ``faces`` of them in
    every frame from ``after`` (wall time) on."""

    labels = ("happy", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self, clock: FakeClock, faces: int, after: float) -> None:
        self.clock, self.faces, self.after = clock, faces, after

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        n = self.faces if self.clock.time() >= self.after else 0
        self.clock.advance(INFERENCE_S_PER_FACE * n)
        return [face(x=0.1 + 0.2 * i) for i in range(n)]

    def close(self) -> None:
        pass


def first_window_ts(tmp_path: Path, faces: int) -> int:
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    clock = FakeClock(start=T0)
    pipeline = SlowerWithFaces(clock, faces, after=T0 + 10.0)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    while clock.time() < T0 + 10.5:
        service.step()
        clock.advance(0.2)
    service.close()
    (stats, *_) = [m for m in messages(tmp_path, "stats") if m["body"]["window_start"] == T0]
    return int(stats["ts"])


def test_a_windows_message_time_does_not_depend_on_the_faces_after_it(tmp_path: Path) -> None:
    none, three = first_window_ts(tmp_path / "a", 0), first_window_ts(tmp_path / "b", 3)
    assert none == three, f"ts {none} with no face after the window's end, {three} with three"
