"""OpenCV sources: a real HTTP MJPEG stream on loopback, and clear errors for dead ones."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions, open_source
from agent.camera.grabber import start_reader
from agent.cli import main
from agent.clock import FakeClock
from agent.errors import CameraLost, SourceError

FRAMES = 8


def mjpeg_handler(jpeg: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for _ in range(FRAMES):
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    self.wfile.write(head + jpeg + b"\r\n")
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def mjpeg_url(media: Path) -> Iterator[str]:
    """A camera-like HTTP MJPEG server on 127.0.0.1 that sends FRAMES astronaut frames, then ends."""
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(media / "astronaut.png")))
    assert ok
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), mjpeg_handler(jpeg.tobytes()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://user:secret@127.0.0.1:{server.server_port}/stream.mjpg"
    server.shutdown()
    server.server_close()


def test_http_mjpeg_stream_delivers_frames_then_reports_the_camera_lost(
    mjpeg_url: str, media: Path, clock: FakeClock
) -> None:
    src = open_source(mjpeg_url, SourceOptions(timeout_seconds=5), clock)
    assert src.info.live
    assert (src.info.width, src.info.height) == (512, 512)
    assert "secret" not in src.info.name
    frames = [src.read() for _ in range(FRAMES)]
    astronaut = cv2.imread(str(media / "astronaut.png")).astype(np.int16)
    for f in frames:
        assert f is not None
        assert f.pixels.shape == (512, 512, 3)
        assert np.abs(f.pixels.astype(np.int16) - astronaut).mean() < 4  # JPEG round trip
    with pytest.raises(CameraLost, match=r"127\.0\.0\.1:\d+/stream\.mjpg: the camera stopped delivering"):
        src.read()
    src.close()


def test_a_live_stream_goes_through_the_grabber(mjpeg_url: str, clock: FakeClock) -> None:
    reader = start_reader(open_source(mjpeg_url, SourceOptions(timeout_seconds=5), clock), realtime=True)
    got: list[int] = []
    with pytest.raises(CameraLost):
        got.extend(f.index for f in reader)
    assert reader.captured == FRAMES
    assert len(got) + reader.dropped == FRAMES
    reader.close()


def test_a_stream_nobody_serves_fails_to_open_with_a_clear_message(clock: FakeClock) -> None:
    url = f"rtsp://admin:pw@127.0.0.1:{free_port()}/live"
    with pytest.raises(SourceError, match=r"rtsp://\*\*\*@127\.0\.0\.1:\d+/live: cannot open the stream"):
        open_source(url, SourceOptions(timeout_seconds=2), clock)


def test_a_missing_v4l2_device_is_named(clock: FakeClock) -> None:
    with pytest.raises(SourceError, match=r"/dev/video97: no such camera device; list cameras with"):
        open_source("/dev/video97", SourceOptions(), clock)
    with pytest.raises(SourceError, match=r"/dev/video98: no such camera device"):
        open_source("98", SourceOptions(), clock)


def free_port() -> int:
    """A loopback port that was free a moment ago (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_analyze_on_a_stream_prints_the_summary_then_exits_1_when_the_camera_is_lost(
    mjpeg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["analyze", mjpeg_url, "--json", "--fps", "120"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines[-1]["summary"]
    assert code == 1
    assert "the camera stopped delivering frames" in err
    assert "secret" not in out + err
    assert summary["captured"] == FRAMES
    assert summary["frames"] + summary["dropped"] + summary["skipped"] == FRAMES
    assert summary["frames"] == len(lines) - 1 >= 1
    assert all(len(r["faces"]) == 1 for r in lines[:-1])  # the astronaut, live


def test_analyze_max_frames_stops_a_live_source_cleanly(
    mjpeg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["analyze", mjpeg_url, "--json", "--fps", "120", "--max-frames", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert json.loads(lines[-1])["summary"]["frames"] == 1
