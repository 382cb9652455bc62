"""`emotion-agent analyze`: real models on real media, the CLI contract, no file left behind."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions
from agent.cli import main
from agent.clock import SystemClock
from agent.commands.analyze import Analysis, default_pipeline
from agent.frame import Pixels
from agent.vision.observation import FaceObservation
from agent.vision.settings import VisionConfig

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["analyze", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def write_clip(path: Path, media: Path, frames: int = 10, fps: float = 5.0) -> Path:
    """A 640x360 clip: the astronaut on a grey background in every frame."""
    face = cv2.resize(cv2.imread(str(media / "astronaut.png")), (300, 300))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (640, 360))
    for _ in range(frames):
        canvas = np.full((360, 640, 3), 120, np.uint8)
        canvas[30:330, 170:470] = face
        writer.write(canvas)
    writer.release()
    return path


def test_one_real_face_gives_one_json_line_with_box_emotion_and_quality(
    media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = run_cli([str(media / "astronaut.png"), "--json"], capsys)
    assert code == 0
    frame, summary = json.loads(lines[0]), json.loads(lines[1])["summary"]
    assert (frame["frame"], frame["t"], len(frame["faces"])) == (0, 0.0, 1)
    face = frame["faces"][0]
    x, y, w, h = face["box"]
    assert 0.28 < x < 0.40
    assert 0.08 < y < 0.20
    assert 0.15 < w < 0.26
    assert 0.15 < h < 0.26  # the astronaut's face, 512x512 image
    assert face["emotion"] == "happy"  # she smiles
    assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert face["quality"]["passed"] is True
    assert face["quality"]["abstain_reason"] is None
    assert (summary["frames"], summary["faces"], summary["classified"]) == (1, 1, 1)
    assert summary["emotions"]["happy"] == 1
    assert set(summary["emotions"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def test_no_face_image_gives_an_empty_faces_list(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli([str(media / "coffee.png"), "--json"], capsys)
    assert code == 0
    assert json.loads(lines[0])["faces"] == []
    assert json.loads(lines[1])["summary"]["faces"] == 0


def test_a_portrait_that_fills_the_image_is_found_in_a_still_but_not_in_a_video(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """insightface's tight 112 px portrait: an image source also gets the padded retry; the
    same picture as the frames of a video does not (a camera never frames a face this way)."""
    code, lines, _ = run_cli([str(media / "tom_hanks.png"), "--json"], capsys)
    assert code == 0
    (face,) = json.loads(lines[0])["faces"]
    assert face["emotion"] == "happy"
    clip = tmp_path / "portrait.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 5.0, (112, 112))
    for _ in range(3):
        writer.write(cv2.imread(str(media / "tom_hanks.png")))
    writer.release()
    code, lines, _ = run_cli([str(clip), "--json"], capsys)
    assert code == 0
    assert json.loads(lines[0])["faces"] == []


def small_face(media: Path) -> np.ndarray:
    """The astronaut shrunk to 200 px on a 640x360 frame: her face is about 35 px, under 40."""
    canvas = np.full((360, 640, 3), 120, np.uint8)
    canvas[100:300, 250:450] = cv2.resize(cv2.imread(str(media / "astronaut.png")), (200, 200))
    return canvas


def blurred_face(media: Path) -> np.ndarray:
    return np.asarray(cv2.GaussianBlur(cv2.imread(str(media / "astronaut.png")), (0, 0), 6), np.uint8)


@pytest.mark.parametrize(("make", "reason"), [(small_face, "too_small"), (blurred_face, "blurred")])
def test_a_tiny_or_blurred_face_abstains_with_its_reason_and_null_emotion(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str], make: Any, reason: str
) -> None:
    cv2.imwrite(str(tmp_path / "face.png"), make(media))
    _, lines, _ = run_cli([str(tmp_path / "face.png"), "--json"], capsys)
    faces = json.loads(lines[0])["faces"]
    summary = json.loads(lines[1])["summary"]
    assert len(faces) == 1
    face = faces[0]
    assert (face["emotion"], face["probs"]) == (None, None)
    assert face["quality"]["passed"] is False
    assert face["quality"]["abstain_reason"] == reason
    assert (summary["classified"], summary["abstained"]) == (0, {reason: 1})


def test_a_folder_gives_one_line_per_image_in_name_order(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("b_coffee.png", "a_astronaut.png"):
        shutil.copy(media / name.split("_", 1)[1], tmp_path / name)
    _, lines, _ = run_cli([str(tmp_path), "--json"], capsys)
    records = [json.loads(line) for line in lines]
    assert [len(r["faces"]) for r in records[:2]] == [1, 0]
    assert [r["t"] for r in records[:2]] == [0.0, 0.2]  # images replay at camera.fps (5)
    assert records[2]["summary"]["frames"] == 2


def test_fps_thins_a_video_and_counts_the_skipped_frames(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "c.mp4", media, frames=10, fps=5)
    _, lines, _ = run_cli([str(clip), "--json", "--fps", "1"], capsys)
    records = [json.loads(line) for line in lines]
    assert [(r["frame"], r["t"]) for r in records[:-1]] == [(0, 0.0), (5, 1.0)]
    s = records[-1]["summary"]
    assert (s["frames"], s["captured"], s["skipped"], s["dropped"]) == (2, 10, 8, 0)
    assert s["faces"] == 2


def test_without_json_a_readable_table_and_summary(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli([str(media / "group6.jpg")], capsys)
    assert code == 0
    assert re.match(r".*group6\.jpg \(replay, 1280x886 @ 5 fps\)$", lines[0])
    assert lines[1].split() == ["frame", "t", "(s)", "faces", "readings"]
    assert re.match(r"\s+0\s+0\.00\s+6\s+\w+", lines[2])
    assert lines[3].startswith("summary: 1 frames, 6 faces: ")
    assert lines[4].startswith("emotions: ")
    assert lines[5].startswith("frames captured 1, dropped 0, skipped 0; frame lifetime p50 ")


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.mp4", r"missing\.mp4: no such file or folder"),
        (lambda d: corrupt(d / "clip.mp4"), r"clip\.mp4: cannot decode the video \(corrupt"),
        (lambda d: corrupt(d / "photo.png"), r"photo\.png: unreadable image"),
        (lambda d: d, r": no images \(.*\) in it \("),
        (lambda d: "ftp://example.org/clip.mp4", r"unsupported URL scheme 'ftp'"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_input: Any, message: str
) -> None:
    code, lines, err = run_cli([str(make_input(tmp_path)), "--json"], capsys)
    assert code == 2
    assert lines == []
    assert re.search(r"emotion-agent: error: .*" + message, err)
    assert "Traceback" not in err


def corrupt(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    return path


def test_an_unknown_config_key_exits_2_naming_key_and_line(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("device_id: lobby-1\nvision:\n  detector: full_range\n  colour: blue\n")
    code, lines, err = run_cli([str(media / "astronaut.png"), "-c", str(cfg)], capsys)
    assert code == 2
    assert lines == []
    assert "vision.colour" in err
    assert "agent.yaml:4" in err
    assert "unknown key" in err


def test_a_config_selects_the_detector_and_the_flag_overrides_it(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("device_id: lobby-1\nvision:\n  detector: short_range\n")
    _, lines, _ = run_cli([str(media / "coffee.png"), "--json", "-c", str(cfg)], capsys)
    assert json.loads(lines[-1])["summary"]["detector"] == "short_range"
    args = [str(media / "coffee.png"), "--json", "-c", str(cfg), "--detector", "full_range"]
    _, lines, _ = run_cli(args, capsys)
    assert json.loads(lines[-1])["summary"]["detector"] == "full_range"


class RecordingPipeline:
    """The real pipeline, plus a record of every pixel array it was lent and what it saw then."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.real = default_pipeline(VisionConfig())
        self.lent: list[Pixels] = []
        self.nonzero_when_lent: list[bool] = []
        self.results: list[list[FaceObservation]] = []
        self.stop_after = stop_after

    @property
    def labels(self) -> tuple[str, ...]:
        return self.real.labels

    @property
    def detector_side(self) -> int:
        return self.real.detector_side

    @property
    def grey_frames(self) -> bool:
        return self.real.grey_frames

    def analyze(self, pixels: Pixels, *_: object, lores: object = None) -> list[FaceObservation]:
        if self.stop_after is not None and len(self.lent) >= self.stop_after:
            raise KeyboardInterrupt
        self.lent.append(pixels)
        self.nonzero_when_lent.append(bool(pixels.any()))
        faces = self.real.analyze(pixels)
        self.results.append(faces)
        return faces

    def close(self) -> None:
        self.real.close()


def test_every_frame_is_zeroed_after_use_and_observations_hold_no_arrays(tmp_path: Path, media: Path) -> None:
    recorder = RecordingPipeline()
    out = io.StringIO()
    run = Analysis(VisionConfig(), out, True, SystemClock(), pipeline_factory=lambda _: recorder)
    clip = write_clip(tmp_path / "c.mp4", media, frames=6)
    summary = run.execute(str(clip), SourceOptions(realtime=False), gate_fps=None)["summary"]
    assert summary["frames"] == 6
    assert all(recorder.nonzero_when_lent)
    assert all(not p.any() for p in recorder.lent)  # every lent buffer is all zeros now
    assert summary["lifetime_ms"]["max"] > 0
    for faces in recorder.results:
        for face in faces:
            for value in (face.box, face.score, face.keypoints, face.probs, *vars_of(face.quality)):
                assert not isinstance(value, np.ndarray)
                assert not any(isinstance(v, np.ndarray) for v in flatten(value))


def vars_of(obj: object) -> list[object]:
    return [getattr(obj, name) for name in obj.__slots__]  # type: ignore[attr-defined]


def flatten(value: object) -> list[object]:
    if isinstance(value, tuple | list):
        return [x for v in value for x in flatten(v)]
    return [value]


def test_ctrl_c_still_prints_the_summary_of_what_was_analysed(tmp_path: Path, media: Path) -> None:
    out = io.StringIO()
    recorder = RecordingPipeline(stop_after=3)
    run = Analysis(VisionConfig(), out, True, SystemClock(), pipeline_factory=lambda _: recorder)
    run.execute(str(write_clip(tmp_path / "c.mp4", media, frames=8)), SourceOptions(realtime=False), None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[-1])["summary"]["frames"] == 3


def files_under(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("*")]


@pytest.mark.slow
def test_analyze_writes_no_file_anywhere(tmp_path: Path, media: Path) -> None:
    """Run as a user would, in an empty cwd with HOME and TMPDIR empty; then look for any file."""
    clip = write_clip(tmp_path / "clip.mp4", media, frames=10)
    cwd, home, tmp = (tmp_path / n for n in ("cwd", "home", "tmp"))
    for d in (cwd, home, tmp):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PYTHONDONTWRITE"))}
    env |= {"HOME": str(home), "TMPDIR": str(tmp)}
    trace = tmp_path / "strace.txt"
    cmd = [sys.executable, "-m", "agent", "analyze", str(clip), "--json"]
    calls = "trace=openat,open,creat,mkdir,rename,link,symlink"
    strace = ["strace", "-f", "-qq", "-e", calls, "-o", str(trace)]
    proc = subprocess.run(
        strace + cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["summary"]["frames"] == 10
    assert files_under(cwd, home, tmp) == []
    writes = [
        line
        for line in trace.read_text().splitlines()
        if re.search(r"O_WRONLY|O_RDWR|O_CREAT|creat\(|mkdir\(|rename\(|link\(", line)
        and "= -1 " not in line
        and not re.search(r'"/(dev|proc|sys)/', line)
        # Python's own bytecode cache of the agent's modules (code, never data); a pip-installed
        # agent ships its .pyc files and writes none of these either
        and "/__pycache__" not in line
    ]
    assert writes == [], writes


@pytest.mark.slow
def test_a_crash_mid_analysis_leaves_no_core_file(tmp_path: Path, media: Path) -> None:
    """analyze holds frames in memory as ``run`` does, so it forbids core dumps as ``run`` does
    (agent/privacy/coredump.py): killed mid-clip by Ctrl-\\ (SIGQUIT, whose default action
    dumps core) under a core size limit that allows cores, it leaves none. Without the guard a
    core file holding the frames was written to the working directory (core_pattern ``core``);
    tests/privacy/test_coredump.py's control shows the check can see one."""
    if Path("/proc/sys/kernel/core_pattern").read_text().startswith("|"):
        pytest.skip("the kernel pipes cores to a program here, not to a file this test can see")
    clip = write_clip(tmp_path / "clip.mp4", media, frames=100)  # 20 s in real time
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def allow_cores() -> None:  # in the child, before exec: a shell after `ulimit -c unlimited`
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "analyze", str(clip), "--json", "--realtime"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=allow_cores,  # noqa: PLW1509 - a limit, no threads yet
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a frame was analysed: frames are in memory now
        assert json.loads(first)["frame"] == 0, proc.stderr.read() if proc.stderr else ""
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        proc.send_signal(signal.SIGQUIT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    cores = [p for p in cwd.rglob("core*") if p.is_file()]
    for core in cores:
        core.unlink()  # hundreds of MB
    assert proc.returncode == -signal.SIGQUIT
    assert cores == []
    core_line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core_line.split()[4:6] == ["0", "0"], core_line


def test_at_log_level_warning_litert_prints_nothing_on_stderr(sample_clip: Path) -> None:
    """"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." reached the terminal whatever
    --log-level said (LiteRT prints it on descriptor 2; found by a new user's trial): it is a
    debug record now."""
    cmd = [sys.executable, "-m", "agent", "--log-level", "WARNING", "analyze", str(sample_clip), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    debug = subprocess.run([*cmd[:3], "--log-level", "DEBUG", *cmd[5:]], capture_output=True, text=True,
                           timeout=120, check=False)
    assert "LiteRT (face_detection_full_range): Created TensorFlow Lite XNNPACK delegate" in debug.stderr


def test_what_else_litert_prints_while_loading_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from agent.vision import runtime  # noqa: PLC0415

    caplog.set_level(logging.DEBUG, "agent.vision.runtime")
    runtime._relog(["INFO: Created delegate", "ERROR: Didn't find op for builtin opcode"], "emotion")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "LiteRT (emotion): Created delegate"),
        (logging.WARNING, "LiteRT (emotion): ERROR: Didn't find op for builtin opcode"),
    ]
