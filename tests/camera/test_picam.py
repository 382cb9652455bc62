"""The picamera2 source against a faithful fake of picamera2's documented API (no Pi camera here)."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from camhelpers import read_allocating
from fake_picamera2 import FakeColorSpace, FakeMappedArray, FakePicamera2, make_module

from agent.camera.base import SourceOptions, load_factory
from agent.camera.picam import Picamera2Source, yuv420_to_rgb
from agent.clock import FakeClock
from agent.errors import BackendUnavailable, CameraLost, SourceError
from agent.privacy.lease import LifetimeRecorder, lease


def test_frames_are_the_cameras_bgr_pixels_copied_out_of_released_requests(
    media: Path, clock: FakeClock
) -> None:
    astronaut = cv2.imread(str(media / "astronaut.png"))
    module = make_module(scene=[astronaut])
    src = Picamera2Source("0", SourceOptions(fps=5, width=640, height=360), clock, module=module)
    src.open()
    cam = FakePicamera2.instances[0]
    frame = src.read()
    assert frame is not None
    assert np.array_equal(frame.pixels, cv2.resize(astronaut, (640, 360)))  # BGR order, stride removed
    assert frame.pixels.flags.writeable
    assert cam.outstanding == 0  # the request went back to the camera before inference
    frame.pixels.fill(0)  # zeroing our copy leaves the camera's buffers alone
    assert src.read() is not None
    info = src.info
    assert (info.kind, info.name, info.width, info.height) == ("picamera2", "picamera2:0", 640, 360)


def test_the_camera_is_configured_for_rgb888_at_the_asked_size_and_rate(clock: FakeClock) -> None:
    module = make_module()
    src = Picamera2Source("0", SourceOptions(fps=4), clock, module=module)
    src.open()
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    main = cam.camera_config["main"]
    assert (main["format"], main["size"]) == ("RGB888", (1280, 720))
    assert cam.camera_config["controls"]["FrameDurationLimits"] == (250_000, 250_000)
    assert cam.calls == ["configure", "start"]
    src.close()
    assert cam.calls == ["configure", "start", "stop", "close"]
    src.close()  # twice is harmless
    assert not cam.is_open


def test_many_reads_never_leak_a_request(clock: FakeClock) -> None:
    module = make_module()
    src = Picamera2Source("0", SourceOptions(), clock, module=module)
    src.open()
    for _ in range(50):  # more than buffer_count: a leaked request would exhaust the buffers
        assert src.read() is not None
    assert FakePicamera2.instances[0].outstanding == 0


def test_no_camera_attached_is_a_clear_source_error(clock: FakeClock) -> None:
    src = Picamera2Source("1", SourceOptions(), clock, module=make_module(cameras=1))
    with pytest.raises(SourceError, match=r"picamera2:1: no such camera \(1 attached\); check the ribbon"):
        src.open()


def test_a_camera_held_by_another_program_is_a_clear_source_error(clock: FakeClock) -> None:
    module = make_module()
    first = Picamera2Source("0", SourceOptions(), clock, module=module)
    first.open()
    with pytest.raises(SourceError, match=r"cannot acquire the camera \(in use by another program"):
        Picamera2Source("0", SourceOptions(), clock, module=module).open()
    first.close()


def test_capture_failure_after_start_is_camera_lost(clock: FakeClock) -> None:
    src = Picamera2Source("0", SourceOptions(), clock, module=make_module())
    src.open()
    FakePicamera2.instances[0].stop()  # e.g. the ribbon came loose and libcamera stopped
    with pytest.raises(CameraLost, match="picamera2:0: capture failed: Camera is not running"):
        src.read()


def test_without_picamera2_installed_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    src = load_factory("picamera2")("0", SourceOptions(), clock)  # importing the backend is fine
    with pytest.raises(BackendUnavailable, match="sudo apt install python3-picamera2"):
        src.open()


def test_importing_the_backend_does_not_import_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    load_factory("picamera2")
    assert "picamera2" not in sys.modules


def test_a_padded_buffer_is_copied_once_into_the_frame_and_nowhere_else(clock: FakeClock) -> None:
    """650 px rows (1950 bytes) are padded to 1984 in the camera's buffer. picamera2's
    ``make_array`` copies the whole padded buffer and then again without the padding, and the
    first copy is freed unzeroed; the source copies the mapped buffer once, into the frame the
    lease zeroes. Measured: bytes the read allocates after the camera handed over its request."""
    module = make_module()
    src = Picamera2Source("0", SourceOptions(fps=5, width=650, height=360), clock, module=module)
    src.open()
    cam = FakePicamera2.instances[0]
    frame, allocated = read_allocating(src, cam)
    assert frame is not None
    assert frame.pixels.flags.writeable
    assert frame.pixels.flags.c_contiguous
    assert frame.pixels.shape == (360, 650, 3)
    assert allocated <= frame.pixels.nbytes * 1.05
    assert cam.outstanding == 0


def test_a_frames_lifetime_starts_when_the_camera_hands_it_over_not_after_its_copies(
    media: Path, clock: FakeClock
) -> None:
    """The frame's pixels exist from the moment the mapped buffer is copied into them (and its
    lores RGB from its conversion): the lifetime counts that time, as a decoding source's does
    (docs/cameras.md). Here each mapping and copy takes 5 ms (from uncached dma-buf memory on a
    Pi it is slow) and inference 30 ms: 40 ms from the hand-over to the zeroing, not 30."""
    astronaut = cv2.imread(str(media / "astronaut.png"))
    module = make_module(scene=[astronaut])

    class SlowMappedArray(FakeMappedArray):
        def __exit__(self, *exc: object) -> None:
            clock.advance(0.005)  # the copy (or the YUV conversion) made inside the mapping
            super().__exit__(*exc)

    module.MappedArray = SlowMappedArray  # type: ignore[attr-defined]
    src = Picamera2Source("0", SourceOptions(fps=5, detector_side=192), clock, module=module)
    src.open()
    cam = FakePicamera2.instances[0]
    capture = cam.capture_request
    handed_over: list[float] = []

    def timed_capture(*args: object, **kwargs: object) -> object:
        request = capture(*args, **kwargs)
        handed_over.append(clock.monotonic())
        return request

    cam.capture_request = timed_capture  # type: ignore[method-assign]
    recorder = LifetimeRecorder(clock)
    frame = src.read()
    assert frame is not None
    assert frame.lores is not None  # two mappings: main and lores
    clock.advance(0.03)  # inference
    with lease(frame, recorder):
        pass
    true_ms = round((clock.monotonic() - handed_over[0]) * 1000, 6)
    assert true_ms == 40.0
    assert [round(ms, 6) for ms in recorder.drain().samples_ms] == [true_ms]


def area_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled as the ISP does (an area filter), in RGB."""
    return cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def lores_source(clock: FakeClock, scene: list[np.ndarray], side: int | None, **size: int) -> Picamera2Source:
    module = make_module(scene=scene)
    src = Picamera2Source("0", SourceOptions(fps=5, detector_side=side, **size), clock, module=module)
    src.open()
    return src


def test_the_isp_scales_a_lores_copy_to_the_detectors_letterbox_size(media: Path, clock: FakeClock) -> None:
    """1280 x 720 into BlazeFace full range's 192 input: a 192 x 108 YUV420 lores stream,
    handed over as RGB with the frame; the request goes back before inference."""
    astronaut = cv2.imread(str(media / "astronaut.png"))
    src = lores_source(clock, [astronaut], 192)
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    lores = cam.camera_config["lores"]
    assert (lores["format"], lores["size"]) == ("YUV420", (192, 108))
    frame = src.read()
    assert frame is not None
    assert frame.lores is not None
    assert frame.lores.shape == (108, 192, 3)
    expected = area_rgb(astronaut, (192, 108))
    assert np.abs(frame.lores.astype(int) - expected).mean() < 3  # YUV 4:2:0 rounding only
    assert frame.lores.flags.writeable
    assert cam.outstanding == 0


def test_a_lores_stream_with_padded_rows_is_unpacked_plane_by_plane(media: Path, clock: FakeClock) -> None:
    """A 150 px wide lores stream has 192-byte Y rows and 96-byte U and V rows."""
    astronaut = cv2.imread(str(media / "astronaut.png"))
    src = lores_source(clock, [astronaut], 150)
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    assert cam.camera_config["lores"]["stride"] == 192
    frame = src.read()
    assert frame is not None
    assert frame.lores is not None
    expected = area_rgb(astronaut, (150, 84))
    assert np.abs(frame.lores.astype(int) - expected).mean() < 3


def test_a_padded_lores_buffer_is_unpacked_with_no_copy_but_its_zeroed_one(clock: FakeClock) -> None:
    """The U and V rows of a padded buffer go into the packed I420 copy (zeroed before the
    conversion returns) in place: flattening a plane's sliced rows first (``reshape(-1)`` of a
    non-contiguous view) made a temporary copy of each colour plane, freed unzeroed (76.8 kB
    each at 640 x 480, under glibc's mmap threshold: it stays in the heap). Measured: the bytes
    the conversion allocates beyond its result and the packed copy."""
    w, h, stride = 640, 480, 704
    yuv = np.random.default_rng(7).integers(0, 256, (h * 3 // 2, stride), dtype=np.uint8)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rgb = yuv420_to_rgb(yuv, w, h)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    packed = h * 3 // 2 * w
    assert peak - before <= rgb.nbytes + packed + 4096
    planes = [yuv[:h, :w]]
    for k in range(2):  # each plane at its own stride: U and V rows of stride / 2
        size = (h // 2) * (stride // 2)
        start = h * stride + k * size
        planes.append(yuv.reshape(-1)[start : start + size].reshape(h // 2, -1)[:, : w // 2])
    i420 = np.concatenate([p.reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
    assert np.array_equal(rgb, cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))


def test_without_a_detector_side_or_at_another_size_no_lores_is_used(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    src = lores_source(clock, [], None)
    assert FakePicamera2.instances[0].camera_config["lores"] is None  # type: ignore[index]
    frame = src.read()
    assert frame is not None
    assert frame.lores is None
    src.close()
    # 1000 x 570 into 128 is 128 x 73: YUV420 needs even sizes, so no lores stream is asked for
    odd = lores_source(clock, [], 128, width=1000, height=570)
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    assert cam.camera_config["lores"] is None
    odd.close()
    # a size libcamera changed is logged and left unused
    module = make_module()
    real_configure = FakePicamera2.configure

    def aligning(self: FakePicamera2, config: dict[str, object]) -> None:
        real_configure(self, config)
        assert self.camera_config is not None
        self.camera_config["lores"]["size"] = (128, 64)  # as if libcamera aligned it

    FakePicamera2.configure = aligning  # type: ignore[method-assign]
    try:
        changed = Picamera2Source("0", SourceOptions(detector_side=128), clock, module=module)
        with caplog.at_level("INFO", logger="agent.camera.picam"):
            changed.open()
        frame = changed.read()
    finally:
        FakePicamera2.configure = real_configure  # type: ignore[method-assign]
    assert frame is not None
    assert frame.lores is None
    assert "lores stream not used: the detector needs 128x72 of a 1280x720 frame, the camera gave 128x64" in (
        caplog.text
    )


def test_a_lores_buffer_that_cannot_be_mapped_leaves_the_frame_and_the_camera_fine(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    src = lores_source(clock, [], 192)
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    cam.camera_config["lores"] = None  # the request then has no lores buffer to map
    with caplog.at_level("WARNING", logger="agent.camera.picam"):
        frame = src.read()
    assert frame is not None
    assert frame.lores is None
    assert frame.pixels.any()
    assert "picamera2 lores stream left unused: KeyError" in caplog.text
    assert cam.outstanding == 0
    assert src.read() is not None  # not tried again, not a lost camera


def colour_patches(w: int, h: int) -> np.ndarray:
    """Saturated patches (where BT.601 and BT.709 differ most) and a grey ramp, BGR."""
    image = np.zeros((h, w, 3), np.uint8)
    colours = [(0, 0, 230), (0, 200, 0), (220, 0, 0), (0, 220, 220), (200, 0, 200), (210, 210, 0)]
    for i, colour in enumerate(colours):
        image[:, i * w // 8 : (i + 1) * w // 8] = colour
    image[:, 6 * w // 8 :] = np.linspace(0, 255, w - 6 * w // 8, dtype=np.uint8)[None, :, None]
    return image


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1280, 720), (1920, 1080)])
def test_the_lores_copy_is_decoded_in_the_colour_space_it_was_encoded_in(
    clock: FakeClock, width: int, height: int
) -> None:
    """picamera2 picks Rec.709 from 1280 x 720 up; the conversion decodes BT.601, so the source
    asks for SMPTE 170M whatever the size, and the lores colours are the scene's."""
    scene = colour_patches(width, height)
    src = lores_source(clock, [scene], 192, width=width, height=height)
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    assert cam.camera_config["colour_space"] == FakeColorSpace.Smpte170m()
    frame = src.read()
    assert frame is not None
    assert frame.lores is not None
    lw, lh = cam.camera_config["lores"]["size"]
    diff = np.abs(frame.lores.astype(int) - area_rgb(scene, (lw, lh)))
    assert diff.mean() < 1.5
    assert np.percentile(diff, 99) <= 6  # chroma at the patches' edges (4:2:0) only


def test_a_camera_that_keeps_another_colour_space_gets_no_lores(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure = FakePicamera2.configure

    def keeping_rec709(self: FakePicamera2, config: dict[str, object]) -> None:
        configure(self, config)
        assert self.camera_config is not None
        self.camera_config["colour_space"] = FakeColorSpace.Rec709()

    monkeypatch.setattr(FakePicamera2, "configure", keeping_rec709)
    with caplog.at_level("INFO", logger="agent.camera.picam"):
        src = lores_source(clock, [], 192)
    frame = src.read()
    assert frame is not None
    assert frame.lores is None
    assert "must be in the SMPTE 170M colour space" in caplog.text


def test_bench_on_a_pi_camera_times_the_lores_path_the_service_takes(
    media: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench picamera2:0`` asks the camera for the detector's input side, as the service
    does, so the detector reads the ISP's lores copy in every timed frame."""
    import json  # noqa: PLC0415

    from agent.cli import main  # noqa: PLC0415
    from agent.commands import bench  # noqa: PLC0415
    from agent.vision.detector import FaceDetector  # noqa: PLC0415

    astronaut = cv2.imread(str(media / "astronaut.png"))
    module = make_module(scene=[astronaut])
    asked: list[SourceOptions] = []

    def opener(source: str, options: SourceOptions, clock: object) -> Picamera2Source:
        asked.append(options)
        src = Picamera2Source(source.split(":")[1], options, FakeClock(), module=module)
        src.open()
        return src

    scaled: list[tuple[int, ...]] = []
    fill_scaled = FaceDetector._fill_scaled

    def counting(self: FaceDetector, rgb: np.ndarray, p: object) -> None:
        scaled.append(rgb.shape)
        fill_scaled(self, rgb, p)  # type: ignore[arg-type]

    monkeypatch.setattr(bench, "open_source", opener)
    monkeypatch.setattr(FaceDetector, "_fill_scaled", counting)
    assert main(["bench", "picamera2:0", "--frames", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [o.detector_side for o in asked] == [192]
    assert result["frames"] == 3
    assert result["lores_frames"] == 3
    assert scaled.count((108, 192, 3)) >= 3
    assert result["faces_per_frame"] == 1.0
