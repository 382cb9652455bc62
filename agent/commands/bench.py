"""``bench [SOURCE]``: how fast the vision stage runs here, and how much of it is glue.

Frames are decoded first (decoding is not measured), then: the median raw ``invoke`` of each
model, the frames per second of the service's frame route (``agent.route.FrameRoute``: lease,
plain vision stage, zeroing) over the same frames, their ratio to ``1 / (detect + emotion
invoke)``, frame lifetime p50/p99 and peak RSS.
Without SOURCE the frames are the pinned astronaut image letterboxed into 640 x 360 and moved
a little each frame. Decoded frames stay in memory only and are zeroed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from agent.camera.base import SourceOptions, open_source
from agent.clock import SystemClock
from agent.commands import bench_clip
from agent.commands.bench_memory import anon_rss_mb, peak_rss_mb
from agent.config import load_config
from agent.errors import InputError, SourceError
from agent.frame import Frame, Pixels
from agent.privacy.lease import LifetimeRecorder, lease
from agent.route import FrameRoute
from agent.vision.pipeline import VisionPipeline
from agent.vision.runtime import Model
from agent.vision.settings import VisionConfig
from agent.vision.stage import VisionStage

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / ".cache" / "media" / "astronaut.png"
SAMPLES = ROOT / "samples"
CLIP_SIZE = (640, 360)
CLIP_FRAMES = 4
DEFAULT_FRAMES = 300
MAX_DECODED_BYTES = 16 << 20
"""Decoded frames kept for the timing loop (then cycled), so the bench's own memory stays small."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="measure model invoke times, pipeline fps, frame lifetime, RSS; --compare: float/int8 x gating",
    )
    p.add_argument(
        "source", nargs="?",
        help="video, image, folder or camera; default: built-in clip (--gating/--compare: samples/lobby.mp4)",
    )
    p.add_argument("-c", "--config", help="take the vision section from this config")
    p.add_argument("--frames", type=int, help="frames to time (default 300; --gating/--compare: whole clip)")
    p.add_argument("--threads", type=int, help="override vision.threads")
    p.add_argument("--detector", choices=["short_range", "full_range"], help="override vision.detector")
    p.add_argument("--precision", choices=["float", "int8", "auto"], help="override vision.precision")
    p.add_argument(
        "--gating", choices=["off", "on"],
        help="run the clip through the service's vision stage, gate off (plain) or on (vision.gating)",
    )
    p.add_argument(
        "--emotion-every", type=int, metavar="N", help="gate on: override vision.gating.emotion_every_frames"
    )
    p.add_argument(
        "--compare", action="store_true",
        help="float and int8, each ungated and gated, one process each; one table",
    )
    p.add_argument("--json", action="store_true", help="one JSON object (--compare: a list) instead of text")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class BenchResult:
    source: str
    frame_size: str
    frames: int
    detector: str
    backend: str
    threads: int
    detect_invoke_ms: float
    emotion_invoke_ms: float
    model_bound_fps: float
    pipeline_fps: float
    pipeline_mean_fps: float
    ratio: float
    cpu_ratio: float
    """The same ratio from CPU time, which machine load disturbs less."""
    load_average: float
    faces_per_frame: float
    lifetime_p50_ms: float
    lifetime_p99_ms: float
    peak_rss_mb: float
    rss_before_vision_mb: float
    """Peak RSS when the pipeline started loading: what the rest of the agent (CLI, config) costs."""
    anon_rss_mb: float
    """Anonymous (private) RSS at the end. The rest of RSS is library code and data mapped from
    files, of which the kernel maps more or fewer pages per fault depending on its page cache:
    the same bench measured 126 and 96 MB of peak RSS half an hour apart on one machine, with
    about 46 MB anonymous both times."""


def builtin_clip(n: int) -> list[Pixels]:
    """The astronaut (one real face) letterboxed into 640 x 360, shifted a few pixels per frame."""
    image = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{ASTRONAUT} is missing: run `make media` (tools/fetch_media.py)")
    face = cv2.resize(image, (360, 360), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(min(n, CLIP_FRAMES)):
        canvas = np.zeros((CLIP_SIZE[1], CLIP_SIZE[0], 3), np.uint8)
        x = 140 + 8 * i
        canvas[:, x : x + 360] = face
        frames.append(canvas)
    return frames


def decode_source(source: str, n: int) -> list[Pixels]:
    """Up to ``n`` decoded frames of a source, through the camera layer, as fast as it reads."""
    src = open_source(source, SourceOptions(realtime=False, fps=1000.0), SystemClock())
    frames: list[Pixels] = []
    try:
        kept = 0
        while len(frames) < n and kept < MAX_DECODED_BYTES and (frame := src.read()) is not None:
            with lease(frame) as pixels:
                frames.append(pixels.copy())
                kept += pixels.nbytes
    finally:
        src.close()
    if not frames:
        raise SourceError(f"{source}: no frame could be decoded")
    return frames


def default_source() -> str | None:
    """``samples/`` when it holds something, else None (the built-in astronaut clip)."""
    if ASTRONAUT.exists() or not SAMPLES.is_dir():
        return None
    return str(SAMPLES) if any(SAMPLES.iterdir()) else None


def timed_invoke(model: Model) -> tuple[float, float]:
    """(wall, CPU) seconds of one invoke."""
    t0, c0 = time.perf_counter(), time.process_time()
    model.invoke()
    return time.perf_counter() - t0, time.process_time() - c0


@dataclass
class Samples:
    """Per-frame times (s), taken interleaved so machine load affects all of them alike."""

    pipeline: list[tuple[float, float]] = field(default_factory=list)
    """(wall, CPU) seconds; CPU time is what this process used, whatever else the machine ran."""
    detect: list[tuple[float, float]] = field(default_factory=list)
    emotion: list[tuple[float, float]] = field(default_factory=list)
    faces: int = 0

    @staticmethod
    def median(samples: list[tuple[float, float]], cpu: bool = False) -> float:
        return statistics.median(c if cpu else w for w, c in samples)


def prime_models(pipeline: VisionPipeline, frame: Pixels) -> None:
    """Leave real inputs in both models (a letterboxed frame, an aligned face) for raw invokes."""
    dets = pipeline.detector.detect(frame)
    if dets:
        pipeline.classifier.classify(pipeline.classifier.align(frame, dets[0]))


def measure(pipeline: VisionPipeline, frames: list[Pixels], n: int, recorder: LifetimeRecorder) -> Samples:
    """Per frame: the frame route (timed as the pipeline), then one raw invoke of each model on
    the same frame's inputs. Copying a decoded frame into the buffer is not timed."""
    clock = recorder.clock
    s = Samples()
    route = FrameRoute(VisionStage.plain(pipeline), recorder=recorder)
    buffer = np.empty_like(frames[0])
    for i in range(n):
        src = frames[i % len(frames)]
        if src.shape != buffer.shape:
            buffer = np.empty_like(src)
        np.copyto(buffer, src)
        t0, c0 = time.perf_counter(), time.process_time()
        frame = Frame(pixels=buffer, index=i, captured_mono=clock.monotonic(), timestamp=clock.time())
        s.faces += len(route.carry(frame).faces)
        s.pipeline.append((time.perf_counter() - t0, time.process_time() - c0))
        np.copyto(buffer, src)
        prime_models(pipeline, buffer)
        s.detect.append(timed_invoke(pipeline.detector.model))
        s.emotion.append(timed_invoke(pipeline.classifier.model))
        pipeline.clear()  # zero the scratch the priming used
    buffer.fill(0)
    return s


def bench(
    pipeline: VisionPipeline,
    frames: list[Pixels],
    n: int,
    source: str,
    cfg: VisionConfig,
    *,
    rss_before: float,
) -> BenchResult:
    recorder = LifetimeRecorder(SystemClock())
    measure(pipeline, frames, min(n, 20), LifetimeRecorder(SystemClock()))  # warm-up
    s = measure(pipeline, frames, n, recorder)
    lifetimes = recorder.drain()
    det_ms = s.median(s.detect) * 1000.0
    emo_ms = s.median(s.emotion) * 1000.0
    bound = 1000.0 / (det_ms + emo_ms)
    fps = 1.0 / s.median(s.pipeline)
    models_cpu = s.median(s.detect, cpu=True) + s.median(s.emotion, cpu=True)
    h, w = frames[0].shape[:2]
    return BenchResult(
        source=source, frame_size=f"{w}x{h}", frames=n, detector=cfg.detector,
        backend=pipeline.backend, threads=cfg.threads,
        detect_invoke_ms=round(det_ms, 3), emotion_invoke_ms=round(emo_ms, 3),
        model_bound_fps=round(bound, 1), pipeline_fps=round(fps, 1),
        pipeline_mean_fps=round(n / sum(w for w, _ in s.pipeline), 1), ratio=round(fps / bound, 3),
        cpu_ratio=round(models_cpu / s.median(s.pipeline, cpu=True), 3),
        load_average=round(os.getloadavg()[0], 2),
        faces_per_frame=round(s.faces / n, 2),
        lifetime_p50_ms=round(lifetimes.percentile(50), 3),
        lifetime_p99_ms=round(lifetimes.percentile(99), 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        rss_before_vision_mb=round(rss_before, 1),
        anon_rss_mb=round(anon_rss_mb(), 1),
    )


def vision_config(args: argparse.Namespace) -> VisionConfig:
    cfg = load_config(args.config).vision if args.config else VisionConfig()
    updates: dict[str, Any] = {}
    if args.threads is not None:
        updates["threads"] = args.threads
    if args.detector is not None:
        updates["detector"] = args.detector
    if args.precision is not None:
        updates["precision"] = args.precision
    if args.emotion_every is not None:
        updates["gating"] = {**cfg.gating.model_dump(), "emotion_every_frames": args.emotion_every}
    try:
        return VisionConfig.model_validate({**cfg.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"bench: vision.{where}: {first['msg']}") from exc


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        raise SourceError(f"--frames must be at least 1 (found {args.frames})")
    cfg = vision_config(args)
    if args.compare or args.gating:
        return bench_clip.run(args, cfg)
    frames_wanted = args.frames or DEFAULT_FRAMES
    rss_before = peak_rss_mb()
    pipeline = VisionPipeline.from_config(cfg)
    source = args.source or default_source()
    frames = decode_source(source, frames_wanted) if source else builtin_clip(frames_wanted)
    try:
        label = source or "built-in astronaut clip"
        result = bench(pipeline, frames, frames_wanted, label, cfg, rss_before=rss_before)
    finally:
        for f in frames:
            f.fill(0)
        pipeline.close()
    if args.json:
        json.dump(asdict(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(result))
    return 0


def render(r: BenchResult) -> str:
    return "\n".join([
        f"source            {r.source} ({r.frame_size}, {r.frames} frames, {r.faces_per_frame} faces/frame)",
        f"backend           {r.backend}, {r.threads} thread(s), detector {r.detector}",
        f"detect invoke     {r.detect_invoke_ms:.3f} ms (median)",
        f"emotion invoke    {r.emotion_invoke_ms:.3f} ms (median)",
        f"model-bound fps   {r.model_bound_fps:.1f}  (1 / (detect + emotion invoke))",
        f"pipeline fps      {r.pipeline_fps:.1f}  (median frame, decoding excluded; "
        f"mean {r.pipeline_mean_fps:.1f})",
        f"ratio             {r.ratio:.3f}  (goal >= 0.9; from CPU time {r.cpu_ratio:.3f})",
        f"frame lifetime    p50 {r.lifetime_p50_ms:.3f} ms, p99 {r.lifetime_p99_ms:.3f} ms",
        f"peak RSS          {r.peak_rss_mb:.1f} MB  (goal <= 100; {r.rss_before_vision_mb:.1f} MB "
        f"before the vision stage loaded; {r.anon_rss_mb:.1f} MB anonymous at the end)",
        f"load average      {r.load_average:.2f}  (other work on this machine skews wall times)",
    ])
