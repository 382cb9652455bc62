#!/usr/bin/env python3
"""How much slower the route's calls run right after something else than when repeated at once.

    .venv/bin/python tools/cold_calls.py [CLIP] [--detector full_range] [--precision float]

For every frame of CLIP (default: the demo clip, three passes) each call below is timed twice:
first right after a detector invoke ("cold"), then again at once ("warm"): an empty Python call,
the anchor decode of the detector's outputs, a face's aligned crop, its sharpness and brightness,
and the detector's input from the letterboxed frame. Then the empty call and a 200-step Python
loop once more, after each of: nothing, a 4 ms sleep, 4 ms of a single-threaded matrix product,
and a read of 8 MB. Medians, in microseconds. Frames are decoded up front and zeroed at the end;
the pipeline's scratch is zeroed after every frame, as in the route.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.camera.base import SourceOptions, open_source  # noqa: E402
from agent.clock import SystemClock  # noqa: E402
from agent.frame import Pixels  # noqa: E402
from agent.vision.pipeline import VisionPipeline  # noqa: E402
from agent.vision.settings import VisionConfig  # noqa: E402

PASSES = 3
SPIN_S = 0.004


def timed(samples: dict[str, list[float]], key: str, call: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = call()
    samples.setdefault(key, []).append(time.perf_counter() - t0)
    return out


def frames_of(clip: str) -> list[Pixels]:
    src = open_source(clip, SourceOptions(realtime=False, fps=1000.0), SystemClock())
    try:
        out = []
        while (frame := src.read()) is not None:
            out.append(frame.pixels.copy())
            frame.pixels.fill(0)
        return out
    finally:
        src.close()


def python_loop() -> int:
    total = 0
    for i in range(200):
        total += i
    return total


def route_calls(pipeline: VisionPipeline, frames: list[Pixels]) -> dict[str, list[float]]:
    """Each call cold (right after a detector invoke), then warm (repeated at once)."""
    det, clf = pipeline.detector, pipeline.classifier
    model: Any = det.model
    s: dict[str, list[float]] = {}

    def twice(key: str, call: Callable[[], Any]) -> Any:
        model.invoke()
        timed(s, f"{key} cold", call)
        return timed(s, f"{key} warm", call)

    def decode_twice(outputs: list[Any]) -> None:  # inside the invoke's read: right after it
        timed(s, "empty call cold", lambda: None)
        timed(s, "empty call warm", lambda: None)
        timed(s, "anchor decode cold", lambda: det._decode(outputs))
        timed(s, "anchor decode warm", lambda: det._decode(outputs))

    for _ in range(PASSES):
        for pixels in frames:
            placement = det._letterbox(pixels)
            model.invoke_and_read(decode_twice)
            faces = pipeline.detect(pixels)
            if faces:
                face = faces[0]
                crop = twice("face crop", lambda p=pixels, f=face: clf.align(p, f))  # type: ignore[misc]
                twice("sharpness", lambda c=crop: clf.measure(c))  # type: ignore[misc]
            rgb = np.zeros((placement.h, placement.w, 3), np.uint8)
            twice("detector input", lambda r=rgb, pl=placement: det._fill_scaled(r, pl))  # type: ignore[misc]
            pipeline.clear()
    return s


def after_other_work() -> dict[str, list[float]]:
    """The empty call and the loop right after a sleep, a matrix product, or a read of 8 MB."""
    big = np.ones(8 << 17)  # 8 MB of float64
    a = np.ones((256, 256), np.float32)

    def spin_matmul() -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < SPIN_S:
            a @ a

    work: dict[str, Callable[[], object]] = {
        "nothing": lambda: None,
        "4 ms sleep": lambda: time.sleep(SPIN_S),
        "4 ms matrix product": spin_matmul,
        "8 MB read": big.sum,
    }
    s: dict[str, list[float]] = {}
    for _ in range(200):
        for name, run in work.items():
            run()
            timed(s, f"empty call after {name}", lambda: None)
            run()
            timed(s, f"200-step loop after {name}", python_loop)
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", nargs="?", default=str(ROOT / "samples" / "lobby.mp4"))
    parser.add_argument("--detector", default="full_range", choices=["full_range", "short_range"])
    parser.add_argument("--precision", default="float", choices=["float", "int8"])
    args = parser.parse_args()
    pipeline = VisionPipeline.from_config(VisionConfig(detector=args.detector, precision=args.precision))
    frames = frames_of(args.clip)
    try:
        results = {**route_calls(pipeline, frames), **after_other_work()}
    finally:
        for pixels in frames:
            pixels.fill(0)
        pipeline.close()
    for key, values in results.items():
        print(f"{key:40s} {statistics.median(values) * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
