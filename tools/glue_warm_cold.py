#!/usr/bin/env python3
"""How much of the per-frame glue is the work itself, and how much the cold caches the
detector's invoke leaves behind.

    .venv/bin/python tools/glue_warm_cold.py [CLIP] [--detector full_range] [--rounds 3]

Carries every frame of CLIP (default: the demo clip) along the service's route
(``agent.route.FrameRoute`` with the plain stage), in three modes, interleaved round by round:

- ``real``: the detector invokes as always;
- ``replay``: the detector's invoke is replaced by copying back the outputs it gave for that
  frame in a first pass: the same faces, so the same glue work, but nothing evicted from the
  caches;
- ``sweep``: the same replay followed by a read of a 16 MB buffer, which evicts the caches as
  a large invoke would, without XNNPACK's code.

For each it prints the glue (route wall time minus the two models' invokes, per frame, the
median over rounds). The replayed copy of the outputs is timed as an invoke, so it is not in
the glue. Frames are decoded up front (not timed) and zeroed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.camera.base import SourceOptions, open_source  # noqa: E402
from agent.clock import SystemClock  # noqa: E402
from agent.frame import Frame, Pixels  # noqa: E402
from agent.route import FrameRoute  # noqa: E402
from agent.vision.pipeline import VisionPipeline  # noqa: E402
from agent.vision.settings import VisionConfig  # noqa: E402
from agent.vision.stage import VisionStage  # noqa: E402

MODES = ("real", "replay", "sweep")
SWEEP_BYTES = 16 * 2**20


class ReplayingDetector:
    """Stands in for the detector's interpreter: records its outputs frame by frame, then
    replays them (``mode``), timing every invoke."""

    def __init__(self, inner: Any, output_indices: tuple[int, ...]) -> None:
        self._inner = inner
        self._outputs = [inner.tensor(i) for i in output_indices]
        self.mode = "real"
        self.frame = 0
        self.recorded: dict[int, list[np.ndarray]] = {}
        self.seconds: list[float] = []
        self._junk = np.ones(SWEEP_BYTES // 8)

    def invoke(self) -> None:
        t0 = time.perf_counter()
        if self.mode == "real":
            self._inner.invoke()
            self.recorded.setdefault(self.frame, [o().copy() for o in self._outputs])
        else:
            for out, saved in zip(self._outputs, self.recorded[self.frame], strict=True):
                out()[...] = saved
            if self.mode == "sweep":
                self._junk.sum()
        self.seconds.append(time.perf_counter() - t0)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def decode(clip: str, limit: int | None) -> list[Pixels]:
    src = open_source(clip, SourceOptions(realtime=False, fps=1000.0), SystemClock())
    frames: list[Pixels] = []
    try:
        while (limit is None or len(frames) < limit) and (frame := src.read()) is not None:
            frames.append(frame.pixels.copy())
            frame.pixels.fill(0)
    finally:
        src.close()
    return frames


def glue_ms(pipeline: VisionPipeline, det: ReplayingDetector, emotion: list[float], frames: list[Pixels],
            mode: str) -> float:
    """Mean glue per frame, in ms, for one pass over ``frames``."""
    route = FrameRoute(VisionStage.plain(pipeline))
    buffer: Pixels = np.empty_like(frames[0])
    det.mode = mode
    total = 0.0
    det.seconds.clear()
    emotion.clear()
    for i, pixels in enumerate(frames):
        det.frame = i
        np.copyto(buffer, pixels)
        t0 = time.perf_counter()
        route.carry(Frame(buffer, i, time.monotonic(), time.time()))
        total += time.perf_counter() - t0
    route.close()
    return (total - sum(det.seconds) - sum(emotion)) * 1000.0 / len(frames)


def measure(clip: str, detector: str, rounds: int, limit: int | None = None) -> dict[str, list[float]]:
    frames = decode(clip, limit)
    if not frames:
        raise SystemExit(f"{clip}: no frame could be decoded")
    pipeline = VisionPipeline.from_config(VisionConfig(detector=detector, precision="float", threads=1))
    model = pipeline.detector.model
    det = ReplayingDetector(model._it, model.output_indices)  # a measuring tool reaches in
    model._it = det
    emotion = pipeline.classifier.model.record_invokes()
    try:
        glue_ms(pipeline, det, emotion, frames, "real")  # records the outputs, warms up
        out: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode in MODES:
                out[mode].append(round(glue_ms(pipeline, det, emotion, frames, mode), 3))
        return out
    finally:
        pipeline.close()
        for f in frames:
            f.fill(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clip", nargs="?", default=str(ROOT / "samples" / "lobby.mp4"))
    parser.add_argument("--detector", choices=["full_range", "short_range"], default="full_range")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, help="at most this many frames (default: all)")
    args = parser.parse_args(argv)
    result = measure(args.clip, args.detector, args.rounds, args.frames)
    print(f"glue ms per frame, {args.clip}, {args.detector}, float, one thread ({args.rounds} rounds)")
    for mode, values in result.items():
        each = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {mode:7s} median {statistics.median(values):.3f}  ({each})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
