"""The camera config section refuses sources no backend speaks, with key path and YAML line."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.errors import ConfigError


def test_a_source_with_an_unsupported_scheme_is_refused_when_the_config_loads() -> None:
    text = "device_id: lobby-1\ncamera:\n  fps: 5\n  source: ftp://nas/clip.mp4\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "agent.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(
        "camera.source (agent.yaml:4): ftp://nas/clip.mp4: unsupported URL scheme 'ftp'"
    )
    assert "use rtsp://, rtsps://, http://, https://, file:/path, /dev/videoN or picamera2" in problem


def test_width_without_height_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"camera.width \(640\) and camera.height \(None\) go together"):
        parse_config("device_id: lobby-1\ncamera:\n  width: 640\n", "agent.yaml")


@pytest.mark.parametrize(
    "source", ["picamera2", "picamera2:1", "/dev/video0", "0", "rtsp://cam/live", "file:/srv/a.mp4", "clips"]
)
def test_every_documented_source_form_loads(source: str) -> None:
    assert parse_config(f"device_id: lobby-1\ncamera:\n  source: {source}\n").camera.source == source
