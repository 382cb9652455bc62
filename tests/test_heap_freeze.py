"""Long-lived objects are frozen out of the garbage collector's passes: ``run`` (at start and
after a reload), ``analyze`` and ``bench`` freeze theirs before the first frame."""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import heap_freeze
from agent.camera.base import SourceOptions
from agent.clock import SystemClock
from agent.commands.analyze import Analysis
from agent.frame import Pixels
from agent.vision.observation import FaceObservation
from agent.vision.settings import VisionConfig
from tests.test_analyze import RecordingPipeline, write_clip
from tests.test_service import scripted_service


class Node:
    """An object in a reference cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def walked(obj: object) -> bool:
    """Whether the collector's passes still walk ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_what_lives_is_frozen_what_is_garbage_is_collected_first(unfrozen: None) -> None:
    kept = Node()
    dropped = Node()
    gone = weakref.ref(dropped)
    del dropped
    assert walked(kept)
    assert heap_freeze.freeze_long_lived() > 0
    assert gone() is None, "start-up's garbage was frozen for good instead of freed"
    assert not walked(kept)
    later = Node()
    assert walked(later), "objects made after start-up must still be collected"


def test_what_an_earlier_freeze_kept_and_is_now_garbage_is_freed(unfrozen: None) -> None:
    """A part a reload replaced, frozen at start and dropped in a reference cycle since."""
    old = Node()
    gone = weakref.ref(old)
    heap_freeze.freeze_long_lived()
    del old
    heap_freeze.freeze_long_lived()
    assert gone() is None


def test_the_service_freezes_its_start_up_before_it_says_it_is_ready(tmp_path: Path, unfrozen: None) -> None:
    service, _ = scripted_service(tmp_path, 10)
    frozen_at_ready: list[int] = []
    service.notifier.ready = lambda status="": frozen_at_ready.append(gc.get_freeze_count())  # type: ignore[method-assign]
    service.start()
    try:
        assert frozen_at_ready
        assert frozen_at_ready[0] > 0
        assert not walked(service.cfg), "the config loaded at start-up is still walked by every full pass"
    finally:
        service.close()


class FreezeAtFirstFrame(RecordingPipeline):
    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[int] = []

    def analyze(self, pixels: Pixels, *args: object, lores: object = None) -> list[FaceObservation]:
        self.frozen.append(gc.get_freeze_count())
        return super().analyze(pixels, *args, lores=lores)


def test_analyze_freezes_its_start_up_before_the_first_frame(
    tmp_path: Path, media: Path, unfrozen: None
) -> None:
    pipeline = FreezeAtFirstFrame()
    run = Analysis(VisionConfig(), io.StringIO(), True, SystemClock(), pipeline_factory=lambda _: pipeline)
    run.execute(str(write_clip(tmp_path / "c.mp4", media, frames=2)), SourceOptions(realtime=False), None)
    assert pipeline.frozen
    assert pipeline.frozen[0] > 0


def test_a_reload_frees_what_it_replaced_and_freezes_what_it_built(tmp_path: Path, unfrozen: None) -> None:
    service, path = scripted_service(tmp_path, 10)
    service.start()
    try:
        old = Node()
        old.route = service.route  # type: ignore[attr-defined]  # a cycle holding the old route
        gone = weakref.ref(old)
        heap_freeze.freeze_long_lived()
        path.write_text(path.read_text().replace("window_seconds: 10", "window_seconds: 20"))
        del old
        assert service.reload()
        assert gone() is None, "the replaced part, frozen at start, was never freed"
        assert not walked(service.route), "the route the reload built is walked by every full pass"
    finally:
        service.close()
