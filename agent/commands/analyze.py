"""``emotion-agent analyze SOURCE``: run the vision stage on a file, folder or camera and print it.

One JSON line per analysed frame (``--json``) or a readable table, then a summary. Nothing is
written to disk, not even a core file on a crash (``agent.privacy.coredump``, as in ``run``):
every frame takes the service's route (``agent.route.FrameRoute``: leased, the config's privacy
zones blanked, analysed, zeroed) with the plain vision stage (every frame, every face); only
numbers reach stdout. This is how an installer checks a camera position before going live.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from agent.camera.base import SourceInfo, SourceOptions, open_source, resolve
from agent.camera.grabber import FrameReader, start_reader
from agent.camera.settings import CameraConfig
from agent.clock import Clock, SystemClock
from agent.commands.arg_types import positive_int
from agent.config import load_config
from agent.errors import CameraLost, SourceError
from agent.frame import Pixels
from agent.heap_freeze import freeze_long_lived
from agent.privacy import coredump
from agent.privacy.lease import LifetimeRecorder
from agent.privacy.settings import PolicyConfig
from agent.privacy.zones import ZoneMask
from agent.route import Carried, FaceFilter, FrameRoute
from agent.vision.gating import EmotionSchedule
from agent.vision.manifest import detector_input_side
from agent.vision.observation import FaceObservation
from agent.vision.settings import VisionConfig
from agent.vision.stage import VisionStage

logger = logging.getLogger(__name__)


class Pipeline(Protocol):
    """What analyze needs of ``agent.vision.pipeline.VisionPipeline``."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    def analyze(
        self,
        pixels: Pixels,
        schedule: EmotionSchedule | None = None,
        frame: int = 0,
        *,
        lores: Pixels | None = None,
    ) -> list[FaceObservation]: ...

    @property
    def detector_side(self) -> int: ...

    @property
    def grey_frames(self) -> bool: ...

    def close(self) -> None: ...


PipelineFactory = Callable[[VisionConfig], Pipeline]


def default_pipeline(cfg: VisionConfig) -> Pipeline:
    from agent.vision.pipeline import VisionPipeline  # noqa: PLC0415 - keeps `--help` free of LiteRT

    return VisionPipeline.from_config(cfg)


def still_pipeline(cfg: VisionConfig) -> Pipeline:
    """The pipeline for an image or a folder of images: a face that fills a picture is also
    looked for on a padded copy when nothing else is found (docs/vision.md)."""
    from agent.vision.pipeline import VisionPipeline  # noqa: PLC0415 - keeps `--help` free of LiteRT

    pipeline = VisionPipeline.from_config(cfg)
    pipeline.stills = True
    return pipeline


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="run the vision stage on a video, image, folder or camera; print JSON lines or a table",
        description="Detect faces, gate their quality and classify emotions frame by frame. "
        "Writes nothing to disk.",
    )
    p.add_argument(
        "source", metavar="SOURCE",
        help="video file, image, folder of images, file:/path, /dev/videoN, rtsp://…, http://… or picamera2",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per frame, then a summary line")
    p.add_argument(
        "--fps", type=positive_float, default=None,
        help="analyse at most N frames per second of video (default: every frame of a file, "
        "camera.fps for a camera)",
    )
    p.add_argument("--detector", choices=["short_range", "full_range"], help="override vision.detector")
    p.add_argument("-c", "--config", help="agent config (YAML) for the vision and camera settings")
    p.add_argument("--realtime", action="store_true", help="pace a file to its own frame rate")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after N analysed frames")
    p.set_defaults(func=cmd_analyze)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 120:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 120, got {text}")
    return value


def cmd_analyze(args: argparse.Namespace) -> int:
    camera, vision, policy = CameraConfig(), VisionConfig(), PolicyConfig()
    if args.config:
        cfg = load_config(args.config)
        camera, vision, policy = cfg.camera, cfg.vision, cfg.policy
    if args.detector:
        vision = VisionConfig.model_validate({**vision.model_dump(), "detector": args.detector})
    # As in `run`: before a camera, a file or a model can put a frame in memory, no core file
    # may hold them (a crash, or Ctrl-\ whose SIGQUIT dumps core where the limit allows it).
    coredump.forbid_core_dumps(announce=False)  # a failure is still a warning
    live = resolve(args.source)[0] != "replay"
    options = SourceOptions(
        fps=args.fps or camera.fps, realtime=args.realtime, width=camera.width, height=camera.height,
        detector_side=detector_input_side(vision.models_dir, vision.detector),
    )
    gate_fps = args.fps if args.fps or not live else camera.fps
    run = Analysis(vision, out=sys.stdout, json_lines=args.json, clock=SystemClock(), policy=policy)
    run.execute(args.source, options, gate_fps=gate_fps, max_frames=args.max_frames)
    return 0


@dataclass
class Tally:
    """Counts for the summary: frames, faces, abstentions by reason, top emotions."""

    labels: tuple[str, ...]
    frames: int = 0
    faces: int = 0
    abstained: Counter[str] = field(default_factory=Counter)
    emotions: Counter[str] = field(default_factory=Counter)

    def add(self, faces: list[FaceObservation]) -> None:
        self.frames += 1
        self.faces += len(faces)
        for face in faces:
            if face.emotion is None:
                self.abstained[face.quality.abstain_reason or "unknown"] += 1
            else:
                self.emotions[face.emotion] += 1


def face_record(face: FaceObservation) -> dict[str, Any]:
    """The CLI contract's per-face object; an abstained face has emotion and probs null."""
    q = face.quality
    return {
        "box": [round(v, 4) for v in face.box],
        "score": round(face.score, 3),
        "emotion": face.emotion,
        "probs": None if face.probs is None else {label: round(p, 4) for label, p in face.probs},
        "quality": {
            "face_px": round(q.face_px, 1),
            "sharpness": round(q.sharpness, 1),
            "brightness": round(q.brightness, 1),
            "yaw_degrees": round(q.yaw_degrees, 1),
            "passed": q.passed,
            "abstain_reason": q.abstain_reason,
        },
    }


def frame_record(carried: Carried) -> dict[str, Any]:
    """``t`` is seconds since the stream began (``Carried.elapsed``)."""
    faces = [face_record(f) for f in carried.faces]
    return {"frame": carried.index, "t": round(carried.elapsed, 3), "faces": faces}


def summary_record(
    tally: Tally, reader: FrameReader, *, info: SourceInfo, elapsed: float, lifetimes: LifetimeRecorder,
    detector: str,
) -> dict[str, Any]:
    stats = lifetimes.drain()
    return {
        "summary": {
            "source": {"kind": info.kind, "fps": info.fps, "width": info.width, "height": info.height},
            "detector": detector,
            "frames": tally.frames,
            "faces": tally.faces,
            "classified": sum(tally.emotions.values()),
            "abstained": dict(sorted(tally.abstained.items())),
            "emotions": {label: tally.emotions[label] for label in tally.labels},
            "fps": round(tally.frames / elapsed, 1) if elapsed > 0 else None,
            "captured": reader.captured,
            "dropped": reader.dropped,
            "skipped": reader.skipped,
            "lifetime_ms": {
                "p50": round(stats.percentile(50), 2),
                "p99": round(stats.percentile(99), 2),
                "max": round(stats.max_ms, 2),
            },
        }
    }


class Analysis:
    """One analyze run: open the source, load the models, route every frame, print, summarise.

    ``policy`` (the config's, when one is given) supplies the privacy zones and the smallest
    face height, as in the service."""

    def __init__(
        self, vision: VisionConfig, out: TextIO, json_lines: bool, clock: Clock,
        pipeline_factory: PipelineFactory = default_pipeline, *, policy: PolicyConfig | None = None,
    ) -> None:
        self.vision = vision
        self.policy = policy or PolicyConfig()
        self.out = out
        self.json_lines = json_lines
        self.clock = clock
        self.pipeline_factory = pipeline_factory
        self.lifetimes = LifetimeRecorder(clock)

    def execute(
        self, source: str, options: SourceOptions, gate_fps: float | None, max_frames: int | None = None
    ) -> dict[str, Any]:
        """Analyse until the source ends, ``max_frames`` or Ctrl-C; return the summary record.

        A camera lost mid-run still gets its summary printed, then CameraLost is raised (exit 1);
        a file with frames that could not be decoded likewise, then SourceError (exit 2).
        """
        src = open_source(source, options, self.clock)  # bad input fails before models load
        from agent.camera.replay import ReplaySource  # noqa: PLC0415 - cv2, loaded by the source already

        factory = self.pipeline_factory
        if factory is default_pipeline and isinstance(src, ReplaySource) and src.mode != "video":
            factory = still_pipeline
        try:
            pipeline = factory(self.vision)
        except BaseException:
            src.close()
            raise
        freeze_long_lived()
        reader = start_reader(src, realtime=options.realtime, fps=gate_fps)
        tally = Tally(pipeline.labels)
        if not self.json_lines:
            self._write(table_header(source, src.info))
        started = self.clock.monotonic()
        lost: CameraLost | None = None
        try:
            self._loop(reader, pipeline, tally, max_frames)
        except KeyboardInterrupt:
            logger.info("analysis interrupted", extra={"fields": {"frames": tally.frames}})
        except CameraLost as exc:
            lost = exc
        finally:
            elapsed = self.clock.monotonic() - started
            reader.close()
            pipeline.close()
        summary = summary_record(
            tally, reader, info=src.info, elapsed=elapsed, lifetimes=self.lifetimes,
            detector=self.vision.detector,
        )
        self._write(json.dumps(summary) if self.json_lines else table_summary(summary["summary"]))
        if lost is not None:
            raise lost
        if src.info.lost:
            raise SourceError(
                f"{source}: {src.info.lost} frame(s) could not be decoded (damaged or truncated file); "
                "the summary above covers only the frames that could"
            )
        return summary

    def _loop(self, reader: FrameReader, pipeline: Pipeline, tally: Tally, max_frames: int | None) -> None:
        faces = FaceFilter(self.policy.min_face_height, self.vision.max_faces)
        route = FrameRoute(VisionStage.plain(pipeline), ZoneMask(self.policy.zones), self.lifetimes, faces)
        try:
            for frame in reader:
                carried = route.carry(frame)
                tally.add(carried.faces)
                record = frame_record(carried)
                self._write(json.dumps(record) if self.json_lines else table_row(record))
                if max_frames is not None and tally.frames >= max_frames:
                    break
                del frame  # not held during the next read: the decoder reuses its buffer
        finally:
            route.close()

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


# --- the readable table -------------------------------------------------------------------------


def table_header(source: str, info: SourceInfo) -> str:
    size = f"{info.width}x{info.height}" if info.width else "size unknown"
    rate = f" @ {info.fps:g} fps" if info.fps else ""
    return f"{info.name if info.kind != 'replay' else source} ({info.kind}, {size}{rate})\n" + (
        f"{'frame':>7} {'t (s)':>8} {'faces':>5}  readings"
    )


def table_row(record: dict[str, Any]) -> str:
    readings = []
    for face in record["faces"]:
        if face["emotion"] is None:
            readings.append(f"abstained ({face['quality']['abstain_reason']})")
        else:
            readings.append(f"{face['emotion']} {face['probs'][face['emotion']]:.2f}")
    return f"{record['frame']:>7} {record['t']:>8.2f} {len(record['faces']):>5}  {', '.join(readings) or '-'}"


def table_summary(s: dict[str, Any]) -> str:
    abstained = sum(s["abstained"].values())
    reasons = ", ".join(f"{k} {v}" for k, v in s["abstained"].items())
    emotions = ", ".join(f"{k} {v}" for k, v in s["emotions"].items() if v) or "none"
    lt = s["lifetime_ms"]
    return "\n".join(
        [
            f"summary: {s['frames']} frames, {s['faces']} faces: {s['classified']} classified, "
            f"{abstained} abstained{f' ({reasons})' if reasons else ''}; {s['fps']} fps",
            f"emotions: {emotions}",
            f"frames captured {s['captured']}, dropped {s['dropped']}, skipped {s['skipped']}; "
            f"frame lifetime p50 {lt['p50']} ms, p99 {lt['p99']} ms, max {lt['max']} ms",
        ]
    )
