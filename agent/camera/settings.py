"""The ``camera`` config section; the source string is checked against the backend registry."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.camera.base import SourceOptions, resolve
from agent.errors import SourceError
from agent.settings_base import Section, in_config_folder


class CameraConfig(Section):
    """Which camera or file to read, how fast, and how to recover when it fails."""

    source: str = Field(
        "picamera2",
        title="Camera source",
        description="picamera2 (or picamera2:N), /dev/videoN, an integer V4L2 index, rtsp://…, "
        "http(s)://… (MJPEG), file:/path (video or image) or a folder of images; a relative "
        "file or folder is read from the config file's folder.",
        min_length=1,
    )
    fps: float = Field(
        5.0, gt=0, le=60, title="Frames per second to analyse",
        description="Asked of the camera and used to thin faster streams; images replay at this rate.",
    )
    loop: bool = Field(
        False,
        title="Loop a file source",
        description="When a file source ends: restart it (true) or flush the open window and exit 0.",
    )
    realtime: bool = Field(
        True,
        title="Replay in real time",
        description="A file source is paced to its own frame rate (true) or read as fast as possible.",
    )
    width: int | None = Field(
        None, ge=64, le=4096, title="Requested capture width (pixels)",
        description="Cameras only; set together with height. picamera2 defaults to 1280x720.",
    )
    height: int | None = Field(
        None, ge=64, le=4096, title="Requested capture height (pixels)",
        description="Cameras only; set together with width.",
    )
    reconnect_max_seconds: float = Field(
        60.0, gt=0, le=3600, title="Longest wait between camera reconnect attempts",
        description="A lost camera is retried with growing waits up to this many seconds.",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _index_as_text(cls, value: object) -> object:
        """YAML reads ``source: 0`` as an integer: accept it as the V4L2 index it means."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("source")
    @classmethod
    def _known_backend(cls, value: str, info: ValidationInfo) -> str:
        """Refuse a source no backend speaks (e.g. ftp://) when the config loads, not at start.
        A file source (a path or file: URL) is read as every path key: ``~`` refused, relative
        beside the config file (a relative file: URL becomes that full path)."""
        try:
            kind, target = resolve(value)
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        if kind != "replay":
            return value
        path = in_config_folder(Path(target), info)
        return value if path == Path(target) else str(path)

    @model_validator(mode="after")
    def _size_together(self) -> CameraConfig:
        if (self.width is None) != (self.height is None):
            raise ValueError(
                f"camera.width ({self.width}) and camera.height ({self.height}) go together: "
                "set both or neither"
            )
        return self

    def source_options(self) -> SourceOptions:
        """What a source backend needs of this section (the source string aside)."""
        return SourceOptions(
            fps=self.fps, realtime=self.realtime, loop=self.loop, width=self.width, height=self.height
        )
