"""A window's work runs on library pages apart from the frames' (``agent.memtrim.rare_task``).

Measured before: ``run`` on the 1080p clip with MQTT on peaked at 101.6 MB, of which 24.2 MB
were library pages: the frames' (OpenCV, LiteRT, numpy) and, from the first window on, the
4.4 MB its signing, serializing and hashing had mapped (cryptography's Rust library,
pydantic-core, OpenSSL), never given back while the frames ran on. The service now trims
right before a window's messages, entries and checkpoint, and right after them.
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

    def __init__(self) -> None:
        self.frames = 0

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        self.frames += 1
        return [face(x=0.1), face(x=0.5)]

    def close(self) -> None:
        pass


def test_each_window_is_published_and_checkpointed_between_two_trims_with_no_frame_inside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE + "audit: {checkpoint_every_entries: 2}\n")
    clock = FakeClock(start=T0)
    pipeline = CountingPipeline()
    trims: list[tuple[int, int, int]] = []

    def published(suffix: str) -> int:
        out = tmp_path / "out.jsonl"
        return len(messages(tmp_path, suffix)) if out.exists() else 0

    def trim() -> int:
        trims.append((pipeline.frames, published("stats"), published("audit/checkpoint")))
        return 0

    monkeypatch.setattr(agent.memtrim, "trim_file_pages", trim)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    trims.clear()  # start-up's own (none today); the windows' from here
    while clock.time() < T0 + 31.0:
        service.step()
        clock.advance(0.2)
    windows = published("stats")
    assert windows == 3
    assert len(trims) == 2 * windows, trims
    for n in range(windows):
        before, after = trims[2 * n], trims[2 * n + 1]
        (frames_before, stats_before, cps_before), (frames_after, stats_after, cps_after) = before, after
        assert frames_before == frames_after > 0  # no frame analysed while the window's pages were in
        assert (stats_before, stats_after) == (n, n + 1)
        assert cps_after > cps_before  # its entries' checkpoint signed inside, not after the trim
    service.close()
