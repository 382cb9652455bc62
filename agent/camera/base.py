"""Camera sources behind one small interface, chosen from a source string by an explicit registry.

    source string                                   backend     module
    picamera2, picamera2:N                          picamera2   agent.camera.picam
    /dev/videoN, N, rtsp://…, http(s)://… (MJPEG)   opencv      agent.camera.opencv_source
    file:/path, a path to a video, image or folder  replay      agent.camera.replay

A backend module is imported only when its key is selected, so a Pi without OpenCV's FFmpeg or
a laptop without picamera2 fails only when that backend is asked for, with what to install.
Sources hand out ``Frame`` objects whose pixels are writeable BGR (or grey, ``agent.frame``)
uint8 arrays owned by the caller, who uses them inside ``with lease(frame) as pixels:``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from agent.errors import BackendUnavailable, SourceError

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.frame import Frame


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source is, for logs, health messages and the analyze summary (no credentials)."""

    kind: str
    """Backend key: replay, opencv or picamera2."""
    name: str
    """Printable name: a path, a device, or a URL with any password removed."""
    fps: float | None
    """Native frame rate when known (a video's own rate, a camera's configured rate)."""
    width: int | None
    height: int | None
    live: bool
    """True for cameras and streams: frames keep coming and are dropped if not taken in time."""
    lost: int = 0
    """File sources: frames that could not be decoded so far (damaged images or video)."""
    scaled: int = 0
    """Frames the source also scaled for the detector on the CPU (``agent.camera.scaled_copy``)."""
    scaling_seconds: float = 0.0
    """The time that took, in the thread that decodes."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to open a source; built from ``camera`` config or the analyze command line."""

    fps: float = 5.0
    """Rate asked of a camera; the rate at which images and folders are replayed."""
    realtime: bool = True
    """File sources: pace frames to their own rate (True) or hand them out as fast as asked."""
    loop: bool = False
    """File sources: start again at the end instead of ending."""
    width: int | None = None
    height: int | None = None
    timeout_seconds: float = 10.0
    """Longest wait for a network stream to open or deliver a frame."""
    detector_side: int | None = None
    """The face detector's square input (``FaceDetector.size``). A source that can scale in
    hardware (picamera2's lores stream) then also delivers each frame at the size the detector
    letterboxes it to (``Frame.lores``), and the detector skips its own resize."""


class FrameSource(Protocol):
    """One camera or file. ``open`` fails with SourceError; ``read`` returns None at the end."""

    key: ClassVar[str]

    @property
    def info(self) -> SourceInfo: ...

    def open(self) -> None:
        """Acquire the device or file; raise SourceError/BackendUnavailable with a clear message."""
        ...

    def read(self) -> Frame | None:
        """Next frame (blocking), or None when a file source has ended. Live: CameraLost on failure."""
        ...

    def close(self) -> None:
        """Release the device or file; safe to call twice."""
        ...


Wanted = Callable[[float], bool]
"""Asked with a frame's stream time before the frame is decoded; False turns it away."""


def every_frame(_stream_time: float) -> bool:
    """What a plain ``read`` wants."""
    return True


@runtime_checkable
class SelectiveSource(Protocol):
    """A source that can pass over a frame without converting it into an array of our own
    (files, V4L2 and network streams: ``grab`` without ``retrieve``). A rate gate asks before
    the decode, so frames it turns away cost no BGR conversion, and a frame waiting for the
    consumer can make room before the next one is decoded (two frame buffers, not three)."""

    def read_wanted(self, wanted: Wanted) -> Frame | None:
        """The next frame ``wanted`` accepts (blocking), or None when a file source has ended.
        ``wanted`` is asked once per frame, in order; the frames it turns away are not decoded
        into pixels the caller sees, and are counted by ``wanted``'s owner."""
        ...


@runtime_checkable
class Interruptible(Protocol):
    """A source whose blocking ``read`` another thread can end early (a paced replay's wait),
    so that closing it (privacy mode, SIGTERM, a reload) neither waits nor decodes again."""

    def interrupt(self) -> None: ...


class SourceFactory(Protocol):
    def __call__(self, target: str, options: SourceOptions, clock: Clock) -> FrameSource: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """A registry entry: where the backend lives and what to install when it cannot load."""

    key: str
    module: str
    factory: str
    install: str


BACKENDS: dict[str, Backend] = {
    "replay": Backend(
        "replay", "agent.camera.replay", "ReplaySource",
        "pip install opencv-python-headless (decodes video and image files)",
    ),
    "opencv": Backend(
        "opencv", "agent.camera.opencv_source", "OpenCVSource",
        "pip install opencv-python-headless (V4L2, RTSP and HTTP through OpenCV's FFmpeg)",
    ),
    "picamera2": Backend(
        "picamera2", "agent.camera.picam", "Picamera2Source",
        "on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv with "
        "--system-site-packages so it is visible",
    ),
}

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_PICAMERA2 = re.compile(r"^picamera2(?::(?P<num>\d+))?\Z")


def resolve(source: str) -> tuple[str, str]:
    """Map a source string to (backend key, target); refuse schemes no backend speaks. A path
    is taken as given: ``"face.png "`` is that file, not ``face.png`` beside it."""
    s = source.strip()
    if not s:
        raise SourceError("camera source is empty: give a file, folder, /dev/videoN, URL or picamera2")
    if m := _PICAMERA2.match(s):
        return "picamera2", m.group("num") or "0"
    if s.isdigit() or re.fullmatch(r"/dev/video\d+", s):
        return "opencv", s
    if s.startswith("file:"):
        parts = _split(s)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{s}: file: URLs must name a local path (file:/path or file:///path)")
        path = unquote(parts.path)
        if "\0" in path:
            raise SourceError(f"{s}: its path holds a NUL byte (%00), which no file name can")
        return "replay", path
    if m := _URL.match(s):
        scheme = m.group("scheme").lower()
        if scheme in NETWORK_SCHEMES:
            if not _split(s).hostname:
                raise SourceError(f"{redact_url(s)}: names no host")
            return "opencv", s
        raise SourceError(
            f"{redact_url(s)}: unsupported URL scheme {scheme!r}; use rtsp://, rtsps://, http://, "
            "https://, file:/path, /dev/videoN or picamera2"
        )
    return "replay", source


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://).*@", re.DOTALL)
"""Everything from the scheme to the last '@': a password may hold an unencoded '/', '?' or
'#', which ends the URL's authority where a parser looks for it."""


def _split(url: str) -> SplitResult:
    """``urlsplit``, its port read too; SourceError (the URL redacted) for a malformed one: an
    unclosed IPv6 bracket, a port that is not a number or is over 65535. The parser's own words
    are left out when the URL holds an '@': they may quote part of a password."""
    parts: SplitResult | None = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as exc:
        if "@" in url and (parts is None or parts.username is None):  # the '@' is not where it belongs
            raise SourceError(
                f"{redact_url(url)}: not a valid URL: its host or port cannot be read (in the user "
                "name or password, write '/', '?', '#', '[', ']' and '@' as %2F, %3F, %23, %5B, %5D "
                "and %40)"
            ) from None
        raise SourceError(f"{redact_url(url)}: not a valid URL ({exc})") from None
    return parts


def redact_url(url: str) -> str:
    """A URL fit for logs: the password (and user) replaced, so credentials never reach a log
    (of a URL that does not parse cleanly, everything up to its last '@')."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        return _USERINFO.sub(r"\1***@", url)
    if "@" in url and parts.username is None:  # an '@' the parser put past the authority
        return _USERINFO.sub(r"\1***@", url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def load_factory(key: str) -> SourceFactory:
    """Import a backend by key; a missing library becomes BackendUnavailable saying what to install."""
    try:
        backend = BACKENDS[key]
    except KeyError:
        raise SourceError(f"unknown camera backend {key!r}; known: {', '.join(BACKENDS)}") from None
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"camera backend {key!r} cannot load ({exc}); to use it: {backend.install}"
        ) from exc
    factory: SourceFactory = getattr(module, backend.factory)
    return factory


def open_source(source: str, options: SourceOptions, clock: Clock) -> FrameSource:
    """Resolve, build and open a source; the caller closes it."""
    key, target = resolve(source)
    src = load_factory(key)(target, options, clock)
    src.open()
    return src
