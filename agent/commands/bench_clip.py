"""``bench --gating on|off`` and ``bench --compare``: the vision stage over a whole clip.

``--gating`` runs a clip along the service's frame route (``agent.route.FrameRoute``) with the
service's ``VisionStage`` (CPU budget, change gate, emotion schedule; frames leased and
zeroed) and reports, per frame of the clip: fps, ms in the detector's and the emotion model's
invokes and in everything else (glue: gate, letterbox, decoding, crops, zeroing), detector
calls, emotion reads and reuses, CPU seconds per minute of video and peak RSS. ``off`` is the
plain pipeline (gate disabled, every face read every frame); ``on`` is the config's
``vision.gating`` with the gate enabled. Decoding the clip is not timed.

``--compare`` runs float and int8 each ungated and gated, each in a child process of its own
(``python -m agent bench --json --gating ...``) so that each peak RSS is that variant's, one
after the other so they do not share the CPU, and prints one table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.camera.base import SourceOptions, open_source
from agent.clock import SystemClock
from agent.commands.bench_memory import anon_rss_mb, peak_rss_mb
from agent.errors import RuntimeFailure, SourceError
from agent.frame import Frame
from agent.heap_freeze import freeze_long_lived
from agent.route import FrameRoute
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig, VisionConfig
from agent.vision.stage import VisionStage

ROOT = Path(__file__).resolve().parents[2]
DEMO_CLIP = ROOT / "samples" / "lobby.mp4"
MAKE_DEMO_CLIP = "run `make demo` or `python tools/make_sample.py` (it writes samples/lobby.mp4)"
VARIANTS = (("float", "off"), ("float", "on"), ("int8", "off"), ("int8", "on"))
"""(precision, gating) of ``--compare``, in table order."""


@dataclass(frozen=True)
class ClipResult:
    """One variant over one clip; per-frame figures are means over every frame of the clip."""

    source: str
    frame_size: str
    precision: str
    gating: str
    emotion_every_frames: int
    backend: str
    threads: int
    frames: int
    video_seconds: float
    fps: float
    ms_per_frame: float
    detect_ms: float
    emotion_ms: float
    glue_ms: float
    """Stage time outside the two models' invokes."""
    detect_invoke_ms: float
    """Median of one detector invoke (0 when it never ran)."""
    emotion_invoke_ms: float
    detector_runs: int
    emotion_reads: int
    emotion_reused: int
    budget_dropped: int
    faces: int
    cpu_s_per_video_min: float
    """Process CPU seconds spent in the stage, per minute of the clip's own time."""
    peak_rss_mb: float
    anon_rss_mb: float
    """Anonymous RSS at the end (see ``bench.BenchResult.anon_rss_mb``)."""


def gating_settings(base: GatingConfig, gating: str) -> GatingConfig:
    """``off``: the plain pipeline (no gate, every face read every frame); ``on``: ``base``
    (``vision.gating``, with ``--emotion-every`` applied) with the gate enabled."""
    if gating == "off":
        return base.model_copy(update={"enabled": False, "emotion_every_frames": 1})
    return base.model_copy(update={"enabled": True})


@dataclass
class _Totals:
    frames: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    faces: int = 0
    first_time: float | None = None
    last_time: float = 0.0
    size: str = ""
    detect: list[float] = field(default_factory=list)
    emotion: list[float] = field(default_factory=list)


def _warm_up(pipeline: VisionPipeline, frame: Frame, totals: _Totals) -> None:
    """Route a copy of the first frame once, untimed, through the plain stage (first invokes
    set up their kernels), then forget the invoke times it left. The copy is zeroed by its
    lease; the frame itself goes on to the timed pass."""
    copy = Frame(
        frame.pixels.copy(), frame.index, frame.captured_mono, frame.timestamp, frame.source_time,
        lores=None if frame.lores is None else frame.lores.copy(), cpu_scaled=frame.cpu_scaled,
        lores_zones=frame.lores_zones,
    )
    FrameRoute(VisionStage.plain(pipeline)).carry(copy)
    totals.detect.clear()
    totals.emotion.clear()
    h, w = frame.pixels.shape[:2]
    totals.size = f"{w}x{h}"


def _one_frame(route: FrameRoute, frame: Frame, totals: _Totals) -> None:
    """The service's route for a frame (without privacy zones), timed from admit to zeroing."""
    t0, c0 = time.perf_counter(), time.process_time()
    carried = route.carry(frame)
    totals.faces += len(carried.faces)
    now = carried.stream_time
    totals.wall += time.perf_counter() - t0
    totals.cpu += time.process_time() - c0
    totals.frames += 1
    totals.first_time = now if totals.first_time is None else totals.first_time
    totals.last_time = now


def run_clip(cfg: VisionConfig, source: str, gating: str, limit: int) -> ClipResult:
    """Up to ``limit`` frames of ``source`` along the route, with a fresh ``VisionStage``."""
    settings = gating_settings(cfg.gating, gating)
    pipeline = VisionPipeline.from_config(cfg)
    freeze_long_lived()  # as `run` does once started
    totals = _Totals()
    totals.detect = pipeline.detector.model.record_invokes()
    totals.emotion = pipeline.classifier.model.record_invokes()
    backend, precision = pipeline.backend, pipeline.precision
    stage = VisionStage(pipeline, settings)
    route = FrameRoute(stage)
    src = open_source(source, SourceOptions(realtime=False), SystemClock())
    try:
        fps = src.info.fps or 0.0
        while totals.frames < limit and (frame := src.read()) is not None:
            if totals.frames == 0:
                _warm_up(pipeline, frame, totals)
            _one_frame(route, frame, totals)
        counters = stage.counters
    finally:
        src.close()
        route.close()
        pipeline.close()
    if totals.frames == 0:
        raise SourceError(f"{source}: no frame could be decoded")
    step = 1.0 / fps if fps > 0 else 0.0
    video_s = (totals.last_time - (totals.first_time or 0.0)) + step
    n = totals.frames
    det_ms, emo_ms, wall_ms = (sum(totals.detect) * 1e3, sum(totals.emotion) * 1e3, totals.wall * 1e3)
    return ClipResult(
        source=source, frame_size=totals.size,
        precision=precision,
        gating=gating, emotion_every_frames=settings.emotion_every_frames, backend=backend,
        threads=cfg.threads, frames=n, video_seconds=round(video_s, 3),
        fps=round(n / totals.wall, 1), ms_per_frame=round(wall_ms / n, 3),
        detect_ms=round(det_ms / n, 3), emotion_ms=round(emo_ms / n, 3),
        glue_ms=round((wall_ms - det_ms - emo_ms) / n, 3),
        detect_invoke_ms=round(statistics.median(totals.detect or [0.0]) * 1e3, 3),
        emotion_invoke_ms=round(statistics.median(totals.emotion or [0.0]) * 1e3, 3),
        detector_runs=counters.detector_runs, emotion_reads=counters.emotion_reads,
        emotion_reused=counters.emotion_reused, budget_dropped=counters.budget_dropped,
        faces=totals.faces,
        cpu_s_per_video_min=round(totals.cpu / video_s * 60.0, 3) if video_s > 0 else 0.0,
        peak_rss_mb=round(peak_rss_mb(), 1),
        anon_rss_mb=round(anon_rss_mb(), 1),
    )


def compare_source(source: str | None) -> str:
    """SOURCE, or the demo clip; a missing demo clip says how to make it."""
    if source:
        return source
    if not DEMO_CLIP.is_file():
        raise SourceError(f"{DEMO_CLIP} is missing: {MAKE_DEMO_CLIP}; or give a clip as SOURCE")
    return str(DEMO_CLIP)


def child_command(args: argparse.Namespace, source: str, precision: str, gating: str) -> list[str]:
    """``python -m agent bench`` for one variant, passing on the options that shape the run."""
    cmd = [sys.executable, "-m", "agent", "--log-level", "WARNING", "bench", source, "--json"]
    cmd += ["--precision", precision, "--gating", gating]
    for flag, value in (("--config", args.config), ("--threads", args.threads), ("--detector", args.detector),
                        ("--frames", args.frames), ("--emotion-every", args.emotion_every)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_child(cmd: list[str]) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - our own CLI
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeFailure(f"bench variant `{' '.join(cmd[3:])}` failed: {why[0]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def compare(args: argparse.Namespace) -> int:
    source = compare_source(args.source)
    results = [run_child(child_command(args, source, p, g)) for p, g in VARIANTS]
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_table(results))
    return 0


COLUMNS = (
    ("precision", "{precision}"),
    ("gate", "{gating}"),
    ("fps", "{fps:.1f}"),
    ("ms/frame", "{ms_per_frame:.2f}"),
    ("detect", "{detect_ms:.2f}"),
    ("emotion", "{emotion_ms:.2f}"),
    ("glue", "{glue_ms:.2f}"),
    ("detector calls", "{detector_runs}/{frames}"),
    ("emotion reads/reused", "{emotion_reads}/{emotion_reused}"),
    ("CPU s/min video", "{cpu_s_per_video_min:.2f}"),
    ("peak RSS MB", "{peak_rss_mb:.1f}"),
    ("anon MB", "{anon_rss_mb:.1f}"),
)


def render_table(results: list[dict[str, Any]]) -> str:
    """One row per variant; ms columns are per frame of the clip (detect + emotion + glue).
    With several rows, each came from its own process (``compare``)."""
    rows = [[head for head, _ in COLUMNS]]
    rows += [[fmt.format(**r) for _, fmt in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    first = results[0]
    every = sorted({r["emotion_every_frames"] for r in results if r["gating"] == "on"})
    head = [
        f"source  {first['source']} ({first['frame_size']}, {first['frames']} frames, "
        f"{first['video_seconds']:.1f} s of video)",
        f"backend {first['backend']}, {first['threads']} thread(s); gate on = vision.gating with "
        f"emotion_every_frames {', '.join(map(str, every)) or '-'}"
        + ("; each variant in its own process" if len(results) > 1 else ""),
        "ms per frame of the clip: detect + emotion (model invokes) + glue (everything else, "
        "decoding excluded)",
        "",
    ]
    return "\n".join([*head, *lines])


def run(args: argparse.Namespace, cfg: VisionConfig, default_frames: int | None = None) -> int:
    """``bench --gating on|off``: one variant over SOURCE (default: the demo clip), for
    ``--frames`` frames, else ``default_frames`` (a camera's), else the whole clip."""
    if args.compare:
        return compare(args)
    limit = args.frames if args.frames is not None else default_frames or sys.maxsize
    result = run_clip(cfg, compare_source(args.source), args.gating, limit)
    if args.json:
        json.dump(asdict(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_table([asdict(result)]))
    return 0
