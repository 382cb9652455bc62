"""``bench [SOURCE]``: how fast the vision stage runs here, and how much of it is glue.

Each frame is decoded (not timed) and copied into one buffer, then carried by the service's
frame route (``agent.route.FrameRoute``: lease, plain vision stage, zeroing; timed), then each
model is invoked raw on that frame's own inputs (timed). A file source is measured whole (every
frame, one at a time: nothing is kept) on a second pass, the first one's ratio printed beside
it (``ColdPass``); a camera for ``--frames`` (default 300); the output says how many frames were
used. Printed: the median raw invokes, the pipeline's fps, the invoke
limit of this clip (per frame, one detector invoke plus one emotion invoke per face read) and
the pipeline's ratio to it, frame lifetime p50/p99 and peak RSS. ``--matrix`` runs each
detector x precision in a child process of its own and prints one table.
Without SOURCE the frames are the pinned astronaut image letterboxed into 640 x 360 and moved
a little each frame.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from agent.camera.base import SourceInfo, SourceOptions, open_source
from agent.clock import SystemClock
from agent.commands import bench_clip, bench_matrix
from agent.commands.bench_memory import anon_rss_mb, file_rss_mb, peak_rss_mb
from agent.config import load_config
from agent.errors import InputError, SourceError
from agent.frame import Frame, Pixels, is_grey
from agent.heap_freeze import freeze_long_lived
from agent.privacy import coredump
from agent.privacy.lease import LifetimeRecorder, lease
from agent.route import FrameRoute
from agent.settings_base import dotted, named_problems
from agent.vision.manifest import detector_input_side
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
"""Frames timed without SOURCE (the built-in clip, cycled) or from a camera."""
WARMUP = 5


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
    p.add_argument(
        "--frames", type=int,
        help="frames to time (default: every frame of a file; built-in clip or camera 300)",
    )
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
    p.add_argument(
        "--matrix", action="store_true",
        help="full and short range, float and int8, one child process each; one table with the invoke limit",
    )
    p.add_argument("--json", action="store_true", help="one JSON object (--compare: a list) instead of text")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class BenchResult:
    source: str
    frame_size: str
    frames: int
    """Frames timed: every frame of a file source, else ``--frames`` (the built-in clip cycled)."""
    whole_clip: bool
    """True when ``frames`` is every frame the source had."""
    detector: str
    precision: str
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
    invoke_limit_fps: float
    """This clip's raw invoke limit: frames / (sum over frames of one detector invoke plus one
    emotion invoke per face read), each invoke timed raw on that frame's own inputs."""
    pipeline_clip_fps: float
    """Frames / total pipeline time over the same frames."""
    limit_ratio: float
    """pipeline_clip_fps / invoke_limit_fps, from wall time."""
    limit_cpu_ratio: float
    """The same from CPU time."""
    glue_ms: float
    """Mean pipeline time per frame minus its invoke limit (wall): letterbox, decode, crops,
    quality checks, zeroing, lease."""
    load_average: float
    faces_per_frame: float
    lores_frames: int
    """Frames whose detector input came with the frame (``Frame.lores``): scaled by the camera
    (picamera2's lores stream) or by the source in the thread that decodes, not in the route."""
    source_scaling_ms: float
    """Mean ms per frame the source spent scaling on the CPU for the detector, outside the
    route (in ``run`` the grabber thread does it): not in ``glue_ms``, which the route alone is."""
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
    file_rss_mb: float
    """File-backed RSS at the end: library pages (and model files) mapped in (``memtrim``)."""
    first_pass: ColdPass | None = None
    """A file's first pass over the clip, carried before the timed one; None for a camera."""


@dataclass(frozen=True)
class ColdPass:
    """The first pass over a clip: each code path's first use, and the library pages the
    vision stage's memory trim (``agent.memtrim``) dropped, read back from the disk 4 KB
    at a time. A one-off in the service; over a 100-frame clip it was 0.13-0.19 ms per frame of
    waiting (docs/vision.md), so the timed pass is the second."""

    limit_ratio: float
    limit_cpu_ratio: float
    major_faults: int
    """Pages read from the disk while it ran (``getrusage``'s ``ru_majflt``)."""


def cold_pass(pipeline: VisionPipeline, frames: Iterable[Shot]) -> ColdPass:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    s = measure(pipeline, frames, LifetimeRecorder(SystemClock()), warmup=WARMUP)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - before
    limit, total = s.limit_and_total()
    if not s.pipeline or total[0] <= 0 or total[1] <= 0:
        raise SourceError("bench: the first pass over the clip decoded no frame")
    return ColdPass(round(limit[0] / total[0], 3), round(limit[1] / total[1], 3), faults)


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


def source_frames(
    source: str,
    limit: int | None,
    detector_side: int | None = None,
    closing: Callable[[SourceInfo], object] | None = None,
) -> Iterator[Frame]:
    """The frames of a source through the camera layer, one at a time, as fast as it reads;
    every frame of a file, at most ``limit`` (None: all). ``detector_side``: as the service asks
    (``agent.processing.source_options``), so the detector's copy is made where the service has
    it made (picamera2's lores stream, or the decoding thread of a file or OpenCV camera).
    ``closing`` gets the source's last ``SourceInfo``, with the time its scaling took."""
    options = SourceOptions(realtime=False, fps=1000.0, detector_side=detector_side)
    src = open_source(source, options, SystemClock())
    try:
        n = 0
        while (limit is None or n < limit) and (frame := src.read()) is not None:
            n += 1
            yield frame
            del frame  # before the next read: the decoder then reuses its buffer (agent.camera.buffers)
    finally:
        if closing is not None:
            closing(src.info)
        src.close()


def is_camera(source: str) -> bool:
    """A live source (no end): timed for ``--frames`` frames, not 'whole'."""
    live = ("picamera2", "/dev/video", "rtsp://", "http://", "https://")
    return source.startswith(live) or source.isdigit()


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
    reads: list[int] = field(default_factory=list)
    """Faces read (classified) in each frame."""
    faces: int = 0
    size: tuple[int, int] = (0, 0)
    lores: int = 0
    """Frames that came with the camera's own scaled copy for the detector (``Frame.lores``)."""

    @staticmethod
    def median(samples: list[tuple[float, float]], cpu: bool = False) -> float:
        return statistics.median(c if cpu else w for w, c in samples)

    def limit_and_total(self) -> tuple[list[float], list[float]]:
        """([wall, CPU] s of the clip's invoke limit: one detector invoke plus one emotion
        invoke per face read, per frame), ([wall, CPU] s of the route over the same frames)."""
        per_frame = list(zip(self.detect, self.emotion, self.reads, strict=True))
        limit = [sum(d[k] + r * e[k] for d, e, r in per_frame) for k in (0, 1)]
        total = [sum(p[k] for p in self.pipeline) for k in (0, 1)]
        return limit, total


def prime_models(pipeline: VisionPipeline, frame: Pixels, lores: Pixels | None = None) -> None:
    """Leave real inputs in both models (a letterboxed frame, an aligned face) for raw invokes;
    a grey frame's detector input comes from its colour copy, as in the route."""
    if is_grey(frame) and not pipeline.detector.reads(lores, frame):
        return  # no colour to fill the detector from: the raw invokes run on zeroed inputs
    dets = pipeline.detector.detect(frame, lores)
    if dets:
        pipeline.classifier.classify(pipeline.classifier.align(frame, dets[0]))


@dataclass(frozen=True)
class Shot:
    """A decoded frame inside its lease, as the bench takes it: its pixels, the source's copy
    for the detector if it made one, and what the route needs to know of that copy."""

    pixels: Pixels
    lores: Pixels | None = None
    age: float = 0.0
    """Seconds the frame had lived when the bench took it: the time the source spent making
    its copy, which the service's frame lifetime counts, so the bench's counts it too."""
    cpu_scaled: bool = False
    lores_zones: object | None = None
    detector_read: Callable[[int | None, object | None, bool], None] | None = None


def measure(
    pipeline: VisionPipeline, frames: Iterable[Shot], recorder: LifetimeRecorder, warmup: int = 0
) -> Samples:
    """Per frame: the frame route (timed as the pipeline), then one raw invoke of each model on
    the same frame's inputs. Copying a decoded frame (and its lores copy) into the buffers is not
    timed. The first frame is first carried ``warmup`` times, untimed, along a route of its own
    (first invokes set up their kernels): no copy of it outlives its turn (at 1080p that was
    6 MB of peak RSS for the whole run)."""
    s = Samples()
    route = FrameRoute(VisionStage.plain(pipeline), recorder=recorder)
    buffers = _Buffers()
    i = -1
    try:
        for shot in frames:  # not enumerate(), whose reused tuple would hold the last frame during the read
            i += 1
            if shot.pixels.shape != buffers.pixels.shape:
                s.size = (shot.pixels.shape[1], shot.pixels.shape[0])
            if i == 0 and warmup:
                spare = FrameRoute(VisionStage.plain(pipeline), recorder=LifetimeRecorder(recorder.clock))
                for _ in range(warmup):
                    _one_frame(pipeline, spare, buffers, (shot, 0), Samples())
            _one_frame(pipeline, route, buffers, (shot, i), s)
            del shot  # free for the decoder's next frame
    finally:  # a camera lost or Ctrl-C part-way leaves no frame in the bench's copies either
        buffers.zero()
    return s


@dataclass
class _Buffers:
    """The bench's own copies of the frame and of its lores copy, reused while sizes hold."""

    pixels: Pixels = field(default_factory=lambda: np.empty((0, 0, 3), np.uint8))
    lores: Pixels = field(default_factory=lambda: np.empty((0, 0, 3), np.uint8))

    def fill(self, shot: Shot) -> Pixels | None:
        """Copy a shot in; the lores buffer, or None when the shot has no lores copy. A buffer
        of another size is zeroed before it is dropped."""
        src, lores = shot.pixels, shot.lores
        if src.shape != self.pixels.shape:
            self.pixels.fill(0)
            self.pixels = np.empty_like(src)
        np.copyto(self.pixels, src)
        if lores is None:
            return None
        if lores.shape != self.lores.shape:
            self.lores.fill(0)
            self.lores = np.empty_like(lores)
        np.copyto(self.lores, lores)
        return self.lores

    def zero(self) -> None:
        self.pixels.fill(0)
        self.lores.fill(0)


def _one_frame(
    pipeline: VisionPipeline, route: FrameRoute, buffers: _Buffers, frame: tuple[Shot, int], s: Samples
) -> None:
    """``frame``: a decoded shot and its index."""
    shot, i = frame
    clock = route.recorder.clock if route.recorder is not None else SystemClock()
    lores = buffers.fill(shot)
    t0, c0 = time.perf_counter(), time.process_time()
    carried = Frame(
        pixels=buffers.pixels, index=i, captured_mono=clock.monotonic() - shot.age, timestamp=clock.time(),
        lores=lores, cpu_scaled=shot.cpu_scaled, lores_zones=shot.lores_zones,
        detector_read=shot.detector_read,
    )
    faces = route.carry(carried).faces
    s.pipeline.append((time.perf_counter() - t0, time.process_time() - c0))
    s.faces += len(faces)
    s.lores += lores is not None
    s.reads.append(sum(f.probs is not None for f in faces))
    lores = buffers.fill(shot)
    try:
        prime_models(pipeline, buffers.pixels, lores)
    finally:
        buffers.zero()  # the copies the priming read: no pixels wait for the next frame
    s.detect.append(timed_invoke(pipeline.detector.model))
    s.emotion.append(timed_invoke(pipeline.classifier.model))
    pipeline.clear()  # zero the scratch the priming used


def leased(frames: Iterable[Frame]) -> Generator[Shot, None, None]:
    """Each camera-layer frame's pixels and lores copy inside its lease (both zeroed once the
    caller copied them)."""
    clock = SystemClock()
    for frame in frames:
        with lease(frame) as pixels:
            age = clock.monotonic() - frame.captured_mono
            yield Shot(pixels, frame.lores, age, frame.cpu_scaled, frame.lores_zones, frame.detector_read)
        del frame, pixels  # free for the decoder's next frame


def cycled(frames: list[Pixels], n: int) -> Iterator[Shot]:
    for i in range(n):
        yield Shot(frames[i % len(frames)])


def bench(
    pipeline: VisionPipeline,
    frames: Iterable[Shot],
    label: str,
    cfg: VisionConfig,
    *,
    rss_before: float,
    whole: bool,
    source: Callable[[], SourceInfo | None] = lambda: None,
    cold: Iterable[Shot] | None = None,
) -> BenchResult:
    """Time ``frames``; with ``cold`` (the same clip again), carry that first as the untimed
    first pass (``ColdPass``), so the figures are those of a warm process."""
    first = None if cold is None else cold_pass(pipeline, cold)
    recorder = LifetimeRecorder(SystemClock())
    s = measure(pipeline, frames, recorder, warmup=WARMUP if first is None else 0)
    n = len(s.pipeline)
    if n == 0:
        raise SourceError(f"{label}: no frame could be decoded")
    lifetimes = recorder.drain()
    det_ms = s.median(s.detect) * 1000.0
    emo_ms = s.median(s.emotion) * 1000.0
    bound = 1000.0 / (det_ms + emo_ms)
    fps = 1.0 / s.median(s.pipeline)
    models_cpu = s.median(s.detect, cpu=True) + s.median(s.emotion, cpu=True)
    limit, total = s.limit_and_total()
    w, h = s.size
    info = source()
    scaling = info.scaling_seconds / n * 1000.0 if info is not None else 0.0
    return BenchResult(
        source=label, frame_size=f"{w}x{h}", frames=n, whole_clip=whole, detector=cfg.detector,
        precision=pipeline.precision, backend=pipeline.backend, threads=cfg.threads,
        detect_invoke_ms=round(det_ms, 3), emotion_invoke_ms=round(emo_ms, 3),
        model_bound_fps=round(bound, 1), pipeline_fps=round(fps, 1),
        pipeline_mean_fps=round(n / total[0], 1), ratio=round(fps / bound, 3),
        cpu_ratio=round(models_cpu / s.median(s.pipeline, cpu=True), 3),
        invoke_limit_fps=round(n / limit[0], 1), pipeline_clip_fps=round(n / total[0], 1),
        limit_ratio=round(limit[0] / total[0], 3), limit_cpu_ratio=round(limit[1] / total[1], 3),
        glue_ms=round((total[0] - limit[0]) / n * 1000.0, 3),
        load_average=round(os.getloadavg()[0], 2),
        faces_per_frame=round(s.faces / n, 2),
        lores_frames=s.lores,
        source_scaling_ms=round(scaling, 3),
        first_pass=first,
        lifetime_p50_ms=round(lifetimes.percentile(50), 3),
        lifetime_p99_ms=round(lifetimes.percentile(99), 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        rss_before_vision_mb=round(rss_before, 1),
        anon_rss_mb=round(anon_rss_mb(), 1),
        file_rss_mb=round(file_rss_mb(), 1),
    )


OVERRIDE_FLAGS: dict[tuple[str | int, ...], str] = {
    ("threads",): "--threads", ("detector",): "--detector", ("precision",): "--precision",
    ("gating", "emotion_every_frames"): "--emotion-every",
}
"""The vision settings a flag overrides, to name the flag in an error."""


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
    except ValidationError as exc:  # worded as a config error, with the flag that set the value
        def name(key: tuple[str | int, ...]) -> str:
            flag = OVERRIDE_FLAGS.get(key)
            return f"vision.{dotted(key)}" + (f" ({flag})" if flag else "")

        raise InputError(f"bench: {named_problems(exc, VisionConfig, name)[0]}") from exc


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        raise SourceError(f"--frames must be at least 1 (found {args.frames})")
    # Frames of real cameras and clips are in memory from here on: no core file may hold them
    # (a crash, or Ctrl-\ whose SIGQUIT dumps core where the limit allows it), as in `run`.
    coredump.forbid_core_dumps(announce=False)
    cfg = vision_config(args)
    if args.matrix:
        return bench_matrix.run(args)
    if args.compare or args.gating:
        return bench_clip.run(args, cfg, DEFAULT_FRAMES if args.source and is_camera(args.source) else None)
    rss_before = peak_rss_mb()
    pipeline = VisionPipeline.from_config(cfg)
    freeze_long_lived()  # as `run` does once started
    source = args.source or default_source()
    try:
        if source:
            limit = args.frames or (DEFAULT_FRAMES if is_camera(source) else None)
            side = detector_input_side(cfg.models_dir and Path(cfg.models_dir), cfg.detector)
            closed: list[SourceInfo] = []
            frames: Iterable[Shot] = leased(source_frames(source, limit, side, closed.append))
            cold = None if is_camera(source) else leased(source_frames(source, limit, side))
            label, whole = source, limit is None
        else:
            closed, cold = [], None
            frames = cycled(builtin_clip(CLIP_FRAMES), args.frames or DEFAULT_FRAMES)
            label, whole = "built-in astronaut clip", False
        result = bench(
            pipeline, frames, label, cfg, rss_before=rss_before, whole=whole,
            source=lambda: closed[0] if closed else None, cold=cold,
        )
    finally:
        pipeline.close()
    if args.json:
        json.dump(asdict(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(result))
    return 0


def _detector_input(r: BenchResult) -> str:
    if r.lores_frames == 0:
        return "resized from the frame in the route"
    if r.source_scaling_ms == 0.0:
        return f"scaled by the camera (lores stream) in {r.lores_frames} of {r.frames} frames"
    return (
        f"scaled by the source as it decoded, in {r.lores_frames} of {r.frames} frames: "
        f"{r.source_scaling_ms:.3f} ms per frame outside the route (in `run`, on the grabber thread)"
    )


def _first_pass(r: BenchResult) -> list[str]:
    if r.first_pass is None:
        return []
    c = r.first_pass
    return [
        f"first pass        {c.limit_ratio:.3f} of the invoke limit (CPU time {c.limit_cpu_ratio:.3f}); "
        f"the figures above are the second pass (the first paid first uses, and {c.major_faults} "
        "library pages read back from the disk after the memory trim)",
    ]


def render(r: BenchResult) -> str:
    return "\n".join([
        f"source            {r.source} ({r.frame_size}, {r.frames} frames"
        f"{': the whole clip' if r.whole_clip else ''}, {r.faces_per_frame} faces/frame)",
        f"backend           {r.backend}, {r.threads} thread(s), detector {r.detector}, "
        f"precision {r.precision}",
        f"detector input    {_detector_input(r)}",
        f"detect invoke     {r.detect_invoke_ms:.3f} ms (median)",
        f"emotion invoke    {r.emotion_invoke_ms:.3f} ms (median)",
        f"model-bound fps   {r.model_bound_fps:.1f}  (1 / (detect + emotion invoke))",
        f"pipeline fps      {r.pipeline_fps:.1f}  (median frame, decoding excluded; "
        f"mean {r.pipeline_mean_fps:.1f})",
        f"ratio             {r.ratio:.3f}  (goal >= 0.9; from CPU time {r.cpu_ratio:.3f})",
        f"invoke limit      {r.invoke_limit_fps:.1f} fps  (this clip: one detect + one emotion invoke per "
        f"face read, raw, per frame)",
        f"pipeline          {r.pipeline_clip_fps:.1f} fps over the same frames: {r.limit_ratio:.3f} of the "
        f"invoke limit (CPU time {r.limit_cpu_ratio:.3f}); glue {r.glue_ms:.3f} ms per frame",
        *_first_pass(r),
        f"frame lifetime    p50 {r.lifetime_p50_ms:.3f} ms, p99 {r.lifetime_p99_ms:.3f} ms",
        f"peak RSS          {r.peak_rss_mb:.1f} MB  (goal <= 100; {r.rss_before_vision_mb:.1f} MB "
        f"before the vision stage loaded; {r.anon_rss_mb:.1f} MB anonymous and "
        f"{r.file_rss_mb:.1f} MB file-backed at the end)",
        f"load average      {r.load_average:.2f}  (other work on this machine skews wall times)",
    ])
