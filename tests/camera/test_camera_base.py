"""Source strings map to backends through the explicit registry; bad strings say what is allowed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from agent.camera.base import BACKENDS, load_factory, open_source, redact_url, resolve
from agent.camera.settings import CameraConfig
from agent.clock import FakeClock
from agent.config import parse_config
from agent.errors import BackendUnavailable, ConfigError, SourceError
from tests.purity import import_blocked


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("picamera2", ("picamera2", "0")),
        ("picamera2:1", ("picamera2", "1")),
        ("/dev/video2", ("opencv", "/dev/video2")),
        ("0", ("opencv", "0")),
        ("rtsp://cam.local:554/stream1", ("opencv", "rtsp://cam.local:554/stream1")),
        ("HTTP://10.0.0.5/video.mjpg", ("opencv", "HTTP://10.0.0.5/video.mjpg")),
        ("file:/srv/clips/lobby.mp4", ("replay", "/srv/clips/lobby.mp4")),
        ("file:///srv/clips/a%20b.mp4", ("replay", "/srv/clips/a b.mp4")),
        ("samples/lobby.mp4", ("replay", "samples/lobby.mp4")),
        ("/data/frames", ("replay", "/data/frames")),
    ],
)
def test_source_strings_select_their_backend(source: str, expected: tuple[str, str]) -> None:
    assert resolve(source) == expected


@pytest.mark.parametrize("source", ["ftp://host/clip.mp4", "s3://bucket/clip.mp4"])
def test_unsupported_url_scheme_is_refused_with_the_allowed_ones(source: str) -> None:
    with pytest.raises(SourceError, match=r"unsupported URL scheme .*use rtsp://, rtsps://, http://"):
        resolve(source)


def test_empty_source_and_remote_file_urls_are_refused() -> None:
    with pytest.raises(SourceError, match="camera source is empty"):
        resolve("  ")
    with pytest.raises(SourceError, match="file: URLs must name a local path"):
        resolve("file://otherhost/clip.mp4")


def test_credentials_never_reach_a_printable_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.9:554/live") == "rtsp://***@10.0.0.9:554/live"
    assert "hunter2" not in redact_url("http://u:hunter2@cam/x.mjpg")
    assert redact_url("rtsp://cam/live") == "rtsp://cam/live"


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("file:///tmp/x/%00x.png", "file:///tmp/x/%00x.png: its path holds a NUL byte (%00)"),
        ("file://[x/a.png", "file://[x/a.png: not a valid URL (Invalid IPv6 URL)"),
        ("http://[::1", "http://[::1: not a valid URL (Invalid IPv6 URL)"),
        ("ftp://[::1", "ftp://[::1: unsupported URL scheme 'ftp'"),
        ("http://u:hunter2@host:99999/x", "http://***@host:99999/x: not a valid URL (Port out of range"),
        ("rtsp://u:hunter2@h:abc/", "rtsp://***@h:abc/: not a valid URL (Port could not be cast"),
        ("rtsp:///live", "rtsp:///live: names no host"),
        ("rtsp://admin:hunter2#x@cam/s", "rtsp://***@cam/s: not a valid URL: its host or port cannot"),
        ("rtsp://admin:hunter2[1]@cam/x", "rtsp://***@cam/x: not a valid URL: its host or port cannot be"),
        ("rtsp://admin:hunter2/x@cam:554/s", "rtsp://***@cam:554/s: not a valid URL: its host or port"),
    ],
)
def test_a_malformed_url_is_refused_naming_what_is_wrong_without_its_password(source: str, said: str) -> None:
    """A NUL byte encoded in a file: URL, an unclosed IPv6 bracket or a bad port raised
    ValueError (a traceback in analyze and bench, exit 1), or passed check-config and then made
    `run` retry the camera for ever ("Port out of range")."""
    with pytest.raises(SourceError) as info:
        resolve(source)
    assert str(info.value).startswith(said), str(info.value)
    assert "hunter2" not in str(info.value)
    assert "hunter" not in str(info.value)  # nor a part of it, quoted by the parser as a port
    with pytest.raises(ConfigError) as config:
        parse_config(f"device_id: lobby-1\ncamera:\n  source: '{source}'\n", "agent.yaml")
    assert config.value.problems[0].startswith(f"camera.source (agent.yaml:3): {said}")


def test_every_backend_declares_the_key_it_is_registered_under() -> None:
    for key, backend in BACKENDS.items():
        cls = getattr(importlib.import_module(backend.module), backend.factory)
        assert cls.key == key


def test_a_backend_whose_library_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "agent.camera.replay", raising=False)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(BackendUnavailable, match=r"'replay' cannot load .*pip install opencv-python"):
        load_factory("replay")


def test_unknown_backend_key_lists_the_known_ones() -> None:
    with pytest.raises(SourceError, match="unknown camera backend 'gopro'; known: replay, opencv, picamera2"):
        load_factory("gopro")


def read_all(source: str, camera: CameraConfig, most: int) -> list[int]:
    """Grey levels of the frames a source opened from ``camera`` hands out (at most ``most``)."""
    src = open_source(source, camera.source_options(), FakeClock())
    levels = []
    try:
        while len(levels) < most and (frame := src.read()) is not None:
            levels.append(int(frame.pixels[0, 0, 0]))
    finally:
        src.close()
    return levels


def test_the_camera_section_decides_whether_a_file_source_loops(folder: Path) -> None:
    """``camera.loop`` reaches the backend: the folder ends after its 3 images, or starts over."""
    once = read_all(str(folder), CameraConfig(source=str(folder), realtime=False), most=10)
    looped = read_all(str(folder), CameraConfig(source=str(folder), realtime=False, loop=True), most=7)
    assert once == [50, 100, 150]
    assert looped == [50, 100, 150, 50, 100, 150, 50]


def test_the_interface_grabber_and_settings_import_with_cv2_picamera2_and_litert_blocked() -> None:
    """Pure logic apart from hardware: only the backends themselves need the libraries."""
    modules = ["agent.camera.base", "agent.camera.grabber", "agent.camera.settings", "agent.camera.picam",
               "agent.commands.analyze"]
    result = import_blocked(modules)
    assert result.ok, result.stderr
