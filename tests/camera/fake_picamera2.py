"""A faithful fake of the parts of picamera2's documented API the agent uses (no libcamera here).

Modelled on raspberrypi/picamera2 ``picamera2/picamera2.py`` and ``picamera2/request.py``:
- ``Picamera2.global_camera_info()`` lists attached cameras; ``Picamera2(camera_num)`` acquires
  one and fails with RuntimeError when another instance holds it;
- ``create_video_configuration`` fills picamera2's defaults (main ``XBGR8888`` 1280x720,
  ``buffer_count`` 6) and refuses to run on a closed camera; ``configure`` only while stopped;
- ``capture_request`` only while started, and never more requests out than ``buffer_count``
  (the real one blocks; this one raises so a leak shows); a request's ``make_array(name)``
  copies the buffer out honouring the stride (rows padded to 64 bytes here), exactly like
  ``Helpers.make_array`` (a whole-buffer copy, then a second copy without the padding);
  ``MappedArray(request, name, reshape=True, write=True)`` is a context manager whose ``array``
  is a view onto the request's own buffer (padding sliced off, no copy), read-only when
  ``write=False``, like ``picamera2/request.py``; ``release`` is reference counted and raises
  below zero;
- "RGB888" buffers hold bytes in B, G, R order (libcamera's little-endian naming);
- a ``lores`` stream (``YUV420``, as the Pi 4's ISP requires of it) is the scene scaled by an
  area filter, as the ISP's own scaler does; its ``MappedArray`` is the (h * 3 / 2, stride)
  array picamera2 hands out for YUV420 (padding left in); ``configure`` rounds an odd lores
  size down to even, as libcamera aligns it;
- colour spaces as ``create_video_configuration`` chooses them when none is given (SMPTE 170M,
  that is BT.601 limited range, below 1280 x 720, else Rec.709) and as the YUV420 lores stream is
  then encoded (BT.601 or BT.709 matrix, limited range); ``camera_configuration()`` reports the
  one in use. ``module.libcamera`` is a fake of the ``libcamera`` module picamera2 imports, with
  ``ColorSpace.Sycc()``, ``Smpte170m()``, ``Rec709()`` compared field by field (picamera2
  patches ``ColorSpace.__eq__`` so).

The scene is a list of BGR images played in turn, so a test can check pixels end to end.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np


@dataclass(frozen=True)
class FakeColorSpace:
    """libcamera's ColorSpace: equal when every field is (picamera2's own ``__eq__``)."""

    primaries: str
    transferFunction: str  # noqa: N815 - libcamera's name
    ycbcrEncoding: str  # noqa: N815
    range: str

    @staticmethod
    def Sycc() -> FakeColorSpace:  # noqa: N802 - libcamera's name
        return FakeColorSpace("Rec709", "Srgb", "Rec601", "Full")

    @staticmethod
    def Smpte170m() -> FakeColorSpace:  # noqa: N802
        return FakeColorSpace("Smpte170m", "Rec709", "Rec601", "Limited")

    @staticmethod
    def Rec709() -> FakeColorSpace:  # noqa: N802
        return FakeColorSpace("Rec709", "Rec709", "Rec709", "Limited")


def bgr_to_i420(bgr: np.ndarray, space: FakeColorSpace) -> np.ndarray:
    """An I420 buffer (h * 3 / 2, w) of a BGR image, in the colour space's matrix and range:
    BT.601 limited is OpenCV's own conversion; BT.709 limited is worked out here."""
    if (space.ycbcrEncoding, space.range) == ("Rec601", "Limited"):
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), np.uint8)
    if (space.ycbcrEncoding, space.range) != ("Rec709", "Limited"):
        raise NotImplementedError(f"fake: no {space} YUV encoding")
    h, w = bgr.shape[:2]
    b, g, r = (bgr[:, :, i].astype(np.float64) / 255.0 for i in range(3))
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    cb, cr = (b - y) / 1.8556, (r - y) / 1.5748

    def half(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [16 + 219 * y, 128 + 224 * half(cb), 128 + 224 * half(cr)]
    flat = np.concatenate([np.clip(np.rint(p), 0, 255).astype(np.uint8).reshape(-1) for p in planes])
    return flat.reshape(h * 3 // 2, w)


BYTES_PER_PIXEL = {"RGB888": 3, "BGR888": 3, "XBGR8888": 4, "XRGB8888": 4}
STRIDE_ALIGN = 64


class FakeCompletedRequest:
    def __init__(self, cam: FakePicamera2, buffers: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        self.cam = cam
        self.ref_count = 1
        self._buffers = buffers
        self._buffer = buffers["main"]
        self.config = config

    def make_array(self, name: str) -> np.ndarray:
        if self.ref_count <= 0:
            raise RuntimeError("CompletedRequest: make_array after release")
        if name != "main":
            raise RuntimeError(f"Stream {name!r} is not defined")
        cfg = self.config["main"]
        w, h = cfg["size"]
        bpp = BYTES_PER_PIXEL[cfg["format"]]
        array = np.array(self._buffer, dtype=np.uint8)  # make_buffer copies out of the dmabuf
        if cfg["stride"] != w * bpp:
            array = np.asarray(array.reshape((h, cfg["stride"]))[:, : w * bpp], order="C")
        return array.reshape((h, w, bpp))

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:
            self.cam.outstanding -= 1
            for buffer in self._buffers.values():
                buffer[:] = 0  # the buffers go back to the camera and are overwritten


class FakeMappedArray:
    """picamera2's ``MappedArray``: the request's buffer mapped as an array, valid inside ``with``."""

    def __init__(
        self, request: FakeCompletedRequest, stream: str, reshape: bool = True, write: bool = True
    ) -> None:
        if request.ref_count <= 0:
            raise RuntimeError("MappedArray over a released request")
        self._request, self._stream, self._reshape, self._write = request, stream, reshape, write
        self._array: np.ndarray | None = None

    def __enter__(self) -> FakeMappedArray:
        request = self._request
        if request.config.get(self._stream) is None:
            raise KeyError(self._stream)
        array = request._buffers[self._stream].view()
        array.flags.writeable = self._write
        if self._reshape:
            cfg = request.config[self._stream]
            w, h = cfg["size"]
            if cfg["format"] == "YUV420":  # picamera2 leaves the row padding in for YUV420
                array = array.reshape((h * 3 // 2, cfg["stride"]))
            else:
                bpp = BYTES_PER_PIXEL[cfg["format"]]
                array = array.reshape((h, cfg["stride"]))[:, : w * bpp].reshape((h, w, bpp))
        self._array = array
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None

    @property
    def array(self) -> np.ndarray | None:
        return self._array


class FakePicamera2:
    cameras: ClassVar[list[dict[str, Any]]] = []
    scene: ClassVar[list[np.ndarray]] = []
    held: ClassVar[set[int]] = set()
    instances: ClassVar[list[FakePicamera2]] = []

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [dict(c, Num=i) for i, c in enumerate(FakePicamera2.cameras)]

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None) -> None:
        if camera_num >= len(FakePicamera2.cameras):
            raise IndexError("list index out of range")
        if camera_num in FakePicamera2.held:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        FakePicamera2.held.add(camera_num)
        FakePicamera2.instances.append(self)
        self.camera_num = camera_num
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.outstanding = 0
        self.frames = 0
        self.calls: list[str] = []

    def create_video_configuration(  # noqa: PLR0917 - picamera2's own positional signature
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        stream = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True} | (main or {})
        if stream["format"] not in BYTES_PER_PIXEL:
            raise RuntimeError(f"Format {stream['format']} not supported")
        if colour_space is None:  # picamera2: by the video resolution
            small = stream["size"][0] < 1280 or stream["size"][1] < 720
            colour_space = FakeColorSpace.Smpte170m() if small else FakeColorSpace.Rec709()
        return {
            "colour_space": colour_space,
            "use_case": use_case,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": stream,
            "lores": lores,
            "controls": {"NoiseReductionMode": 1} | (controls or {}),
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: dict[str, Any]) -> None:
        self.calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        cfg = dict(camera_config)
        main = dict(cfg["main"])
        w, _ = main["size"]
        row = w * BYTES_PER_PIXEL[main["format"]]
        main["stride"] = -(-row // STRIDE_ALIGN) * STRIDE_ALIGN
        cfg["main"] = main
        if cfg.get("lores") is not None:
            lores = {"format": "YUV420"} | dict(cfg["lores"])
            if lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV420 on this platform")
            lw, lh = lores["size"]
            lores["size"] = (lw - lw % 2, lh - lh % 2)
            lores["stride"] = -(-lores["size"][0] // STRIDE_ALIGN) * STRIDE_ALIGN
            cfg["lores"] = lores
        self.camera_config = cfg

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(self, config: dict[str, Any] | None = None, show_preview: bool = False) -> None:
        self.calls.append("start")
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def cancel_all_and_flush(self) -> None:
        """Picamera2's tidy-up after a timed-out capture (a dislodged cable), before closing."""
        self.calls.append("cancel_all_and_flush")

    def capture_request(self, wait: Any = None, flush: Any = None) -> FakeCompletedRequest:
        if not self.started or self.camera_config is None:
            raise RuntimeError("Camera is not running")
        if self.outstanding >= self.camera_config["buffer_count"]:
            raise RuntimeError("fake: every buffer is held by unreleased requests (the real one hangs)")
        self.outstanding += 1
        buffers = {"main": self._render()}
        if self.camera_config.get("lores") is not None:
            buffers["lores"] = self._render_lores()
        self.frames += 1
        return FakeCompletedRequest(self, buffers, self.camera_config)

    def _scene(self, w: int, h: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        if FakePicamera2.scene:
            image = FakePicamera2.scene[self.frames % len(FakePicamera2.scene)]
            return cv2.resize(image, (w, h), interpolation=interpolation)
        return np.full((h, w, 3), 128, np.uint8)

    def _render_lores(self) -> np.ndarray:
        cfg = self.camera_config
        assert cfg is not None
        lores = cfg["lores"]
        w, h = lores["size"]
        yuv = bgr_to_i420(self._scene(w, h, cv2.INTER_AREA), cfg["colour_space"])
        rows = np.zeros((h * 3 // 2, lores["stride"]), np.uint8)
        if lores["stride"] == w:
            rows[:] = yuv
        else:  # each plane keeps its own stride: Y rows of stride, U and V rows of stride / 2
            y, u, v = yuv[:h], yuv[h : h * 5 // 4].reshape(-1), yuv[h * 5 // 4 :].reshape(-1)
            flat = rows.reshape(-1)
            flat[: h * lores["stride"]].reshape(h, -1)[:, :w] = y
            half = lores["stride"] // 2
            base = h * lores["stride"]
            for k, plane in enumerate((u, v)):
                start = base + k * (h // 2) * half
                flat[start : start + (h // 2) * half].reshape(h // 2, half)[:, : w // 2] = (
                    plane.reshape(h // 2, w // 2)
                )
        return rows.reshape(-1)

    def _render(self) -> np.ndarray:
        cfg = self.camera_config
        assert cfg is not None
        main = cfg["main"]
        w, h = main["size"]
        bgr = self._scene(w, h)
        if main["format"] == "BGR888":  # bytes R, G, B
            bgr = bgr[:, :, ::-1]
        if BYTES_PER_PIXEL[main["format"]] == 4:
            bgr = np.dstack([bgr, np.full((h, w), 255, np.uint8)])
        rows = np.zeros((h, main["stride"]), np.uint8)
        rows[:, : bgr.shape[1] * bgr.shape[2]] = bgr.reshape(h, -1)
        return rows.reshape(-1)

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        if self.started:
            self.stop()
        if self.is_open:
            self.is_open = False
            FakePicamera2.held.discard(self.camera_num)


def make_module(scene: list[np.ndarray] | None = None, cameras: int = 1) -> types.ModuleType:
    """A fresh ``picamera2`` module object with the fake class and a clean state."""
    FakePicamera2.cameras = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": f"fake{i}"} for i in range(cameras)
    ]
    FakePicamera2.scene = list(scene or [])
    FakePicamera2.held = set()
    FakePicamera2.instances = []
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    module.MappedArray = FakeMappedArray  # type: ignore[attr-defined]
    libcamera = types.ModuleType("libcamera")
    libcamera.ColorSpace = FakeColorSpace  # type: ignore[attr-defined]
    module.libcamera = libcamera  # type: ignore[attr-defined] # picamera2 imports it at the top
    return module
