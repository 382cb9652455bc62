"""`emotion-agent analyze` on hostile input (found by review): memory of a face-less still, the
pixel limit for videos, the decoders' own messages, a path taken as given, an output that
cannot be written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli import main
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["--log-level", "WARNING", "analyze", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def run_sub(args: list[str], stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "agent", "--log-level", "WARNING", "analyze", *args],
        env=env, text=True, timeout=300, stdout=stdout, stderr=subprocess.PIPE, check=False,
    )


# --- A: the still's padded retry copies the frame at 4x its size ---------------------------------


def test_the_padded_retry_of_a_still_does_not_allocate_four_times_the_frame() -> None:
    """A still with no face is searched again on a copy padded by half its size on each side:
    at full size (2h x 2w x 3) bytes, 4x the frame, only to be shrunk to the detector's
    192 x 192 input (a face-less 8192 x 8192 PNG peaked at 1.3 GB RSS); a large still is
    shrunk first, and every copy is zeroed."""
    pipeline = VisionPipeline.from_config(VisionConfig())
    pipeline.stills = True
    frame = np.full((3000, 3000, 3), 120, np.uint8)
    try:
        pipeline.analyze(frame)  # warm
        tracemalloc.start()
        faces = pipeline.analyze(frame)
        _, peak = tracemalloc.get_traced_memory()
        pipeline_scratch_zero = pipeline.scratch_is_zero()
    finally:
        tracemalloc.stop()
        pipeline.close()
    assert faces == []
    assert pipeline_scratch_zero
    assert peak <= frame.nbytes, f"one still took {peak / 1e6:.0f} MB for a {frame.nbytes / 1e6:.0f} MB frame"


# --- B: the 64 Mpx decompression-bomb limit is bypassed through the video path --------------------


def test_an_image_over_64_mpx_is_refused_whatever_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`big.jpg` (9000 x 8000 = 72 Mpx) is refused ("larger than 64 Mpx"), and so are the same
    bytes as `big.mp4`, which go to FFmpeg (no pixel limit of its own: they were decoded and
    analysed, and a 2 MB MJPEG AVI of 12000 x 9000 frames took 956 MB)."""
    ok, data = cv2.imencode(".jpg", np.full((8000, 9000, 3), 120, np.uint8))
    assert ok
    as_image, as_video = tmp_path / "big.jpg", tmp_path / "big.mp4"
    as_image.write_bytes(data.tobytes())
    as_video.write_bytes(data.tobytes())
    code, _, err = run_cli([str(as_image), "--json"], capsys)
    assert code == 2
    assert "64 Mpx" in err
    code, lines, err = run_cli([str(as_video), "--json"], capsys)
    assert code == 2, f"a 72 Mpx frame was decoded and analysed: {lines[-1][:160]}"
    assert "big.mp4" in err
    assert "9000 x 8000 pixels, larger than 64 Mpx" in err


# --- C: a corrupt JPEG is reported as sound; the codecs' own messages reach the terminal ----------


def corrupt_jpeg(media: Path, path: Path) -> Path:
    ok, data = cv2.imencode(".jpg", cv2.imread(str(media / "astronaut.png")))
    assert ok
    b = bytearray(data.tobytes())
    b[len(b) // 2 : len(b) // 2 + 2000] = b"\xaa" * 2000  # the lower half decodes as garbage
    path.write_bytes(bytes(b))
    return path


def test_a_jpeg_with_corrupt_data_is_not_reported_as_a_clean_analysis(tmp_path: Path, media: Path) -> None:
    """libjpeg decodes the damaged file with "Corrupt JPEG data: premature end of data segment"
    on stderr (its only sign, and the docs say decoder chatter is silenced); analyze prints a
    normal reading, lost 0, exit 0. A video damaged the same way exits 2 naming the file."""
    path = corrupt_jpeg(media, tmp_path / "damaged.jpg")
    proc = run_sub([str(path), "--json"])
    assert proc.returncode == 2, f"exit {proc.returncode}; stdout: {proc.stdout[-200:]}"
    assert "damaged.jpg" in proc.stderr


def test_the_image_codecs_own_messages_do_not_reach_the_terminal(tmp_path: Path, media: Path) -> None:
    """docs/cameras.md: "FFmpeg's and OpenCV's own stderr messages are silenced when a source
    opens (the agent's error says what failed)". A truncated PNG prints libpng's
    "libpng error: PNG input buffer is incomplete" before the agent's one line."""
    png = (media / "astronaut.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(png[: len(png) // 2])
    proc = run_sub([str(path)])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[-1]], proc.stderr
    assert proc.stderr.startswith("emotion-agent: error: ")


# --- D: the SOURCE path is stripped of spaces ----------------------------------------------------


def test_a_file_whose_name_ends_with_a_space_is_the_file_analysed(
    tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`face.png ` (the astronaut) is the file analysed, not `face.png` beside it (no face),
    which a stripped path opened silently."""
    named = tmp_path / "face.png "
    named.write_bytes((media / "astronaut.png").read_bytes())
    cv2.imwrite(str(tmp_path / "face.png"), np.full((512, 512, 3), 120, np.uint8))
    code, lines, err = run_cli([str(named), "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(lines[0])["faces"]) == 1, "the file next to it was analysed instead"


# --- E: an output that cannot be written is a traceback ------------------------------------------


def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback(media: Path) -> None:
    """`analyze … --json > out.jsonl` on a full disk (Linux's /dev/full): one error line and a
    non-zero exit, not the traceback of the OSError ENOSPC from stdout's write."""
    with open("/dev/full", "w") as full:
        proc = run_sub([str(media / "astronaut.png"), "--json"], stdout=full)
    assert "Traceback" not in proc.stderr, proc.stderr[-600:]
    assert proc.returncode != 0
    assert proc.stderr.splitlines()[-1] == "emotion-agent: error: [Errno 28] No space left on device"
    assert "Exception ignored" not in proc.stderr
