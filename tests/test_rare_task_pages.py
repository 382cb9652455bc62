"""A window's work runs on library pages apart from the frames' (``agent.memtrim.rare_task``).

Measured before: ``run`` on the 1080p clip with MQTT on peaked at 101.6 MB, of which 24.2 MB
were library pages: the frames' (OpenCV, LiteRT, numpy) and, from the first window on, the
4.4 MB its signing, serializing and hashing had mapped (cryptography's Rust library,
pydantic-core, OpenSSL), never given back while the frames ran on. The service now trims
right before a window's messages, entries and checkpoints, and right after them; and around a
checkpoint due by time between windows (found by review: with the default settings every
checkpoint is due by time, 10 minutes after the last, and was signed between frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agent.memtrim
from agent.clock import FakeClock
from agent.config import load_config
from agent.service import Service
from agent.vision.observation import FaceObservation
from tests.analytics.faces import face
from tests.test_publish_timing import LiveSource
from tests.test_service import NO_GATE, messages, write_config

T0 = 1_800_000_000.0


class CountingPipeline:
    labels = ("happy", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self) -> None:
        self.frames = 0

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        self.frames += 1
        return [face(x=0.1), face(x=0.5)]

    def close(self) -> None:
        pass


def trims_of_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit: str, seconds: float
) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """Each trim as (frames analysed, stats published, checkpoints published) at that moment,
    over ``seconds`` of a live camera with 10 s windows; and the same three at the end."""
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE + f"audit: {audit}\n")
    clock = FakeClock(start=T0 + 3.0)  # the start's checkpoint, so those due by time, off the windows' ends
    pipeline = CountingPipeline()
    trims: list[tuple[int, int, int]] = []

    def now() -> tuple[int, int, int]:
        out = tmp_path / "out.jsonl"
        if not out.exists():
            return pipeline.frames, 0, 0
        return pipeline.frames, len(messages(tmp_path, "stats")), len(messages(tmp_path, "audit/checkpoint"))

    def trim() -> int:
        trims.append(now())
        return 0

    monkeypatch.setattr(agent.memtrim, "trim_file_pages", trim)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    trims.clear()  # start-up's own (none today); the run's from here
    started = now()
    while clock.time() < T0 + seconds:
        service.step()
        clock.advance(0.2)
    end, seen = now(), list(trims)
    service.close()  # flushes the last window between two more trims: not counted here

    def since_start(t: tuple[int, int, int]) -> tuple[int, int, int]:
        return t[0], t[1] - started[1], t[2] - started[2]

    return [since_start(t) for t in seen], since_start(end)


def assert_published_only_between_paired_trims(
    trims: list[tuple[int, int, int]], end: tuple[int, int, int]
) -> None:
    """Trims come in pairs; nothing is published outside a pair, no frame is read inside one."""
    assert len(trims) % 2 == 0, trims
    published = (0, 0)
    for before, after in zip(trims[0::2], trims[1::2], strict=True):
        assert before[1:] == published, (before, published)  # nothing left between two pairs
        assert before[0] == after[0], (before, after)  # no frame analysed inside
        assert after[1:] != before[1:], (before, after)  # a pair is there for something
        published = after[1:]
    assert end[1:] == published, (end, published)


@pytest.mark.parametrize(
    ("audit", "seconds", "published"),
    [
        ("{checkpoint_every_entries: 2}", 31.0, (3, 3)),  # due by count: as a window's entries go in
        ("{checkpoint_every_entries: 1000, checkpoint_every_minutes: 1}", 135.0, (13, 2)),  # by time
    ],
)
def test_windows_and_checkpoints_are_published_between_two_trims_with_no_frame_inside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit: str, seconds: float, published: tuple[int, int]
) -> None:
    trims, end = trims_of_a_run(tmp_path, monkeypatch, audit, seconds)
    stats, checkpoints = published
    assert end[1] == stats, end
    assert end[2] >= checkpoints, end
    assert_published_only_between_paired_trims(trims, end)
