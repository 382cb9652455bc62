"""File replay: videos, images and folders, paced on the injected clock, with clear errors."""

from __future__ import annotations

import itertools
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from camhelpers import grey_level, write_video

from agent.camera import replay
from agent.camera.base import FrameSource, SourceOptions, open_source
from agent.camera.grabber import PullReader, RateGate, start_reader
from agent.clock import FakeClock, SystemClock
from agent.errors import SourceError
from agent.frame import Frame
from agent.privacy.lease import LifetimeRecorder, lease


def read_all(src: FrameSource, limit: int = 100) -> list[Frame]:
    frames = []
    for _ in range(limit):
        frame = src.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


def test_video_frames_come_in_order_as_writeable_bgr_at_file_positions(clip: Path, clock: FakeClock) -> None:
    src = open_source(str(clip), SourceOptions(realtime=False), clock)
    assert (src.info.kind, src.info.fps, src.info.width, src.info.height) == ("replay", 10.0, 64, 48)
    frames = read_all(src)
    assert [f.index for f in frames] == list(range(6))
    assert [f.source_time for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert [grey_level(f.pixels) for f in frames] == pytest.approx([0, 20, 40, 60, 80, 100], abs=6)
    for f in frames:
        assert f.pixels.dtype == np.uint8
        assert f.pixels.shape == (48, 64, 3)
        assert f.pixels.flags.writeable
        assert f.pixels.flags.c_contiguous
    assert src.read() is None


def test_realtime_replay_paces_frames_on_the_clock(clip: Path, clock: FakeClock) -> None:
    src = open_source(str(clip), SourceOptions(realtime=True), clock)
    frames = read_all(src)
    start = frames[0].captured_mono
    assert [round(f.captured_mono - start, 6) for f in frames] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_a_frames_lifetime_is_measured_from_the_decoder_even_with_slow_pacing(
    clip: Path, clock: FakeClock
) -> None:
    """Real-time replay waits (on the clock) between frames. Each frame's recorded lifetime must be
    the time from leaving the decoder to being zeroed: 30 ms of inference here, whatever the
    pacing. (Decoded first and then paced, a frame sat decoded for the whole wait, 100 ms here,
    while its lifetime started after it.)"""
    src = open_source(str(clip), SourceOptions(realtime=True), clock)
    decoded_at: list[float] = []
    decode = src._next_pixels  # type: ignore[attr-defined]

    def timed_decode(*args: object) -> object:
        pixels = decode(*args)
        decoded_at.append(clock.monotonic())
        return pixels

    src._next_pixels = timed_decode  # type: ignore[attr-defined]
    recorder = LifetimeRecorder(clock)
    true_ms = []
    while (frame := src.read()) is not None:
        clock.advance(0.03)  # inference
        with lease(frame, recorder):
            pass
        true_ms.append(round((clock.monotonic() - decoded_at[frame.index]) * 1000, 6))
    lifetimes = [round(ms, 6) for ms in recorder.drain().samples_ms]
    assert len(lifetimes) == 6
    assert lifetimes == true_ms
    assert lifetimes == [30.0] * 6


def test_as_fast_as_possible_never_waits(clip: Path, clock: FakeClock) -> None:
    src = open_source(str(clip), SourceOptions(realtime=False), clock)
    read_all(src)
    assert clock.monotonic() == 0.0


def test_loop_restarts_the_file_and_keeps_counting(clip: Path, clock: FakeClock) -> None:
    """Issue 14 item 8: the position keeps growing across passes (it restarted at 0, so the fps
    limiter refused every later frame and the window clock stood still)."""
    src = open_source(str(clip), SourceOptions(realtime=False, loop=True), clock)
    frames = read_all(src, limit=14)
    assert [f.index for f in frames] == list(range(14))
    assert [round(f.source_time or 0, 6) for f in frames[5:8]] == [0.5, 0.6, 0.7]
    assert grey_level(frames[6].pixels) == pytest.approx(0, abs=3)  # the second pass's first frame


def test_single_image_gives_one_frame_and_loops_with_fresh_buffers(media: Path, clock: FakeClock) -> None:
    src = open_source(str(media / "astronaut.png"), SourceOptions(realtime=False), clock)
    assert (src.info.width, src.info.height) == (512, 512)
    frames = read_all(src)
    assert len(frames) == 1
    assert np.array_equal(frames[0].pixels, cv2.imread(str(media / "astronaut.png")))
    opts = SourceOptions(realtime=True, fps=2, loop=True)
    looped = open_source(f"file:{media / 'astronaut.png'}", opts, clock)
    first = looped.read()
    assert first is not None
    first.pixels.fill(0)  # a lease zeroes it: the next frame must not share the buffer
    second = looped.read()
    assert second is not None
    assert second.pixels.any()
    assert second.captured_mono - first.captured_mono == pytest.approx(0.5)


def test_folder_replays_images_sorted_by_name_and_ignores_other_files(folder: Path, clock: FakeClock) -> None:
    src = open_source(str(folder), SourceOptions(realtime=False, fps=4), clock)
    frames = read_all(src)
    assert [grey_level(f.pixels) for f in frames] == [50, 100, 150]  # a.jpg, b.png, c.bmp
    assert [f.source_time for f in frames] == [0.0, 0.25, 0.5]


def test_missing_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(SourceError, match=r"nothere\.mp4: no such file or folder"):
        open_source(str(tmp_path / "nothere.mp4"), SourceOptions(), clock)


def test_random_bytes_named_mp4_are_refused_as_a_corrupt_video(tmp_path: Path, clock: FakeClock) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(7).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"bad\.mp4: cannot decode the video \(corrupt, truncated"):
        open_source(str(bad), SourceOptions(), clock)


def test_an_empty_video_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.mp4: cannot decode the video"):
        open_source(str(tmp_path / "empty.mp4"), SourceOptions(), clock)


def test_unreadable_image_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(SourceError, match=r"photo\.jpg: unreadable image \(not a valid \.jpg file"):
        open_source(str(bad), SourceOptions(), clock)


def test_empty_folder_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    said = r"no images \(.*\.jpg.*\) in it \(1 other file\(s\) or folder\(s\)\)"
    with pytest.raises(SourceError, match=said):
        open_source(str(tmp_path), SourceOptions(), clock)


def test_a_folder_with_nothing_in_it_is_said_to_be_empty(tmp_path: Path, clock: FakeClock) -> None:
    """A folder holding files but no image was called "empty folder" (found by a new user's trial)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no images \(.*\) in it \(the folder is empty\)"):
        open_source(str(tmp_path / "empty"), SourceOptions(), clock)


def test_a_broken_image_inside_a_folder_is_named_when_reached_and_skipped(
    folder: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each file once per pass: a broken one is skipped and counted, never a reason to start the
    folder again (which re-analysed the good images 28 times)."""
    (folder / "b2.png").write_bytes(b"garbage")
    src = open_source(str(folder), SourceOptions(realtime=False, loop=True), clock)
    frames = read_all(src, limit=6)
    assert [grey_level(f.pixels) for f in frames] == [50, 100, 150, 50, 100, 150]
    assert [f.source_time for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert re.search(r"b2\.png: unreadable image", caplog.text)
    assert src.info.lost == 2  # once per pass


def test_video_with_a_container_rate_uses_it_over_the_option(tmp_path: Path, clock: FakeClock) -> None:
    clip25 = write_video(tmp_path / "c25.mp4", frames=3, fps=25.0)
    src = open_source(str(clip25), SourceOptions(fps=5, realtime=True), clock)
    frames = read_all(src)
    assert src.info.fps == 25.0
    assert frames[2].captured_mono - frames[0].captured_mono == pytest.approx(0.08)


def test_a_folder_analysed_at_half_its_rate_counts_broken_images_without_giving_them_a_turn(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Replayed at 10 images a second and analysed at 5. Every image is still read before the
    rate limit is asked (only then is a broken one known): both broken images are reported and
    take no turn, whichever the limit would have turned away."""
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(8):
        cv2.imwrite(str(d / f"{i}.png"), np.full((30, 40, 3), 20 * (i + 1), np.uint8))
    (d / "3.png").write_bytes(b"broken")
    (d / "4.png").write_bytes(b"broken too")
    src = open_source(str(d), SourceOptions(fps=10, realtime=False), clock)
    reader = PullReader(src, RateGate(5))
    levels = []
    times = []
    for frame in reader:
        with lease(frame) as pixels:
            levels.append(grey_level(pixels))
            times.append(frame.stream_time)
        del frame, pixels
    assert levels == [20, 60, 140]  # the good ones are 0 1 2 5 6 7 at 0.0 .. 0.5 s: 0, 2, 6 analysed
    assert times == [0.0, 0.2, 0.4]
    assert src.info.lost == 2
    assert reader.tally().captured == 6
    reported = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(reported) == 2


def test_a_looped_folder_analysed_below_its_rate_keeps_looping(tmp_path: Path, clock: FakeClock) -> None:
    """Two images replayed at 10 a second, analysed once a second: most passes have no image
    analysed, and that is not a pass with no image (which ends a loop that would spin)."""
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"{i}.png"), np.full((30, 40, 3), 50 * (i + 1), np.uint8))
    src = open_source(str(d), SourceOptions(fps=10, realtime=False, loop=True), clock)
    frames = iter(PullReader(src, RateGate(1)))
    times = []
    for frame in itertools.islice(frames, 4):
        with lease(frame):
            times.append(frame.stream_time)
        del frame
    assert times == [0.0, 1.0, 2.0, 3.0]


def _record_decodes(monkeypatch: pytest.MonkeyPatch) -> list[npt.NDArray[np.uint8]]:
    """Every array ``cv2.imdecode`` hands to the replay source, kept to look at afterwards."""
    decoded: list[npt.NDArray[np.uint8]] = []
    real = cv2.imdecode

    def imdecode(buf: npt.NDArray[np.uint8], flags: int) -> npt.NDArray[np.uint8] | None:
        out = real(buf, flags)
        if out is not None:
            decoded.append(out)
        return out

    monkeypatch.setattr(replay.cv2, "imdecode", imdecode)
    return decoded


def test_an_image_too_small_to_analyse_is_zeroed_after_it_was_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 x 4 image decodes, then is refused for its size: its pixels are zeroed all the same,
    at open and in every pass."""
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((4, 4, 3), 200, np.uint8))
    cv2.imwrite(str(d / "b.png"), np.full((30, 40, 3), 100, np.uint8))
    decoded = _record_decodes(monkeypatch)
    src = open_source(str(d), SourceOptions(realtime=False), FakeClock())
    try:
        for frame in PullReader(src):
            with lease(frame):
                pass
            del frame
    finally:
        src.close()
    assert src.info.lost == 1
    assert len(decoded) == 4  # a.png and b.png at open, then again in the pass
    assert [a.shape for a in decoded if a.any()] == []


def test_closing_a_paced_replay_neither_waits_for_the_pace_nor_decodes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder replayed in real time at camera.fps 0.5: the grabber waits 2 s for the next
    image. Privacy mode closes the reader meanwhile: close returns at once (it blocked the
    service loop for the whole pace) and no image is decoded after it (one was)."""
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.full((30, 40, 3), 50 * (i + 1), np.uint8))
    src = open_source(str(d), SourceOptions(fps=0.5, realtime=True), SystemClock())
    decoded = _record_decodes(monkeypatch)
    reader = start_reader(src, realtime=True, fps=0.5)
    frame = next(iter(reader))
    with lease(frame):
        pass
    del frame
    time.sleep(0.2)  # the grabber is now pacing towards the second image
    before = len(decoded)
    t0 = time.monotonic()
    reader.close()
    took = time.monotonic() - t0
    time.sleep(2.0)  # past the moment the second image was due
    assert took < 0.5
    assert len(decoded) == before


def test_a_looping_video_replaced_by_a_fifo_is_refused_at_the_rewind_not_waited_on(tmp_path: Path) -> None:
    """open() refuses a FIFO named like a video (FFmpeg would wait on it for ever); the rewind
    of a looping replay reopens the path, so it checks the same."""
    clip = write_video(tmp_path / "clip.mp4", frames=3)
    src = open_source(str(clip), SourceOptions(realtime=False, loop=True), FakeClock())
    for _ in range(3):
        frame = src.read()
        assert frame is not None
        with lease(frame):
            pass
        del frame
    clip.unlink()
    os.mkfifo(clip)
    result: list[object] = []

    def read() -> None:
        try:
            result.append(src.read())
        except SourceError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(3.0)
    hung = reader.is_alive()
    if hung:  # unblock FFmpeg's open so that the thread ends
        os.close(os.open(clip, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5.0)
    src.close()
    assert not hung
    assert isinstance(result[0], SourceError)
    assert "FIFO" in str(result[0]) or "fifo" in str(result[0]).lower()


def _png_bomb(path: Path, side: int) -> None:
    """A valid PNG of side x side black pixels: a few hundred KB that decode to side² x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    co = zlib.compressobj(9)
    row = b"\0" * (side * 3 + 1)
    idat = b"".join(co.compress(row) for _ in range(side)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_an_image_over_64_mpx_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when it loads: set by the replay source
    (after cv2 was imported) it was ignored, and an 8400 x 8400 PNG of 200 KB was decoded
    (212 MB; a 20000 x 20000 one took 7.4 GB). A process of its own, as the CLI runs."""
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, 8400)
    assert bomb.stat().st_size < 1024 * 1024
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "analyze", str(bomb), "--json"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr[-800:]
    assert str(bomb) in proc.stderr
    assert "64 Mpx" in proc.stderr
