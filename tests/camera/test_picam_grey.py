"""Grey frames from the Pi camera: once the route takes them, the main stream is turned grey
straight from libcamera's mapped buffer, so its colour is never copied out; the detector reads
the ISP's lores RGB as before. The main stream's copies are pooled, as a decoder's frames are."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from camhelpers import read_allocating
from fake_picamera2 import FakePicamera2, make_module

from agent.camera.base import SourceOptions
from agent.camera.picam import Picamera2Source
from agent.clock import FakeClock
from agent.frame import Frame
from agent.privacy.lease import lease


def opened(clock: FakeClock, scene: list[np.ndarray], side: int | None = 192, **size: int) -> Picamera2Source:
    options = SourceOptions(fps=5, detector_side=side, **size)
    src = Picamera2Source("0", options, clock, module=make_module(scene))
    src.open()
    return src


def read(src: Picamera2Source) -> Frame:
    frame = src.read()
    assert frame is not None
    return frame


def test_frames_turn_grey_once_the_route_says_it_takes_them(media: Path, clock: FakeClock) -> None:
    astronaut = cv2.imread(str(media / "astronaut.png"))
    src = opened(clock, [astronaut], width=640, height=360)
    first = read(src)
    assert first.pixels.shape == (360, 640, 3)  # no route has said yet
    assert first.detector_read is not None
    first.detector_read(192, None, True)
    frame = read(src)
    scene = cv2.resize(astronaut, (640, 360))
    assert frame.pixels.shape == (360, 640)
    assert np.array_equal(frame.pixels, cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY))
    assert frame.lores is not None
    assert frame.lores.shape == (108, 192, 3)  # the detector's copy stays the ISP's colour one
    assert FakePicamera2.instances[0].outstanding == 0
    frame.detector_read(192, None, False)  # a reload turned tiles on: colour again
    assert read(src).pixels.shape == (360, 640, 3)


def test_the_grey_frame_is_made_from_the_mapped_buffer_with_no_colour_copy(clock: FakeClock) -> None:
    """650 px rows padded to 1984 bytes: the grey conversion reads the mapped view where it is;
    nothing the size of the colour image is allocated on the way."""
    src = opened(clock, [], width=650, height=360)
    read(src).detector_read(192, None, True)
    frame, allocated = read_allocating(src, FakePicamera2.instances[0])
    assert frame is not None
    assert frame.pixels.shape == (360, 650)
    assert frame.lores is not None
    assert allocated <= (frame.pixels.nbytes + frame.lores.nbytes) * 1.1
    assert allocated < 360 * 650 * 3


def test_without_a_lores_copy_the_frame_stays_colour(clock: FakeClock) -> None:
    """The detector then resizes the frame itself, from its colour."""
    src = opened(clock, [], side=None)
    first = read(src)
    assert first.detector_read is not None
    first.detector_read(192, None, True)
    frame = read(src)
    assert frame.lores is None
    assert frame.pixels.shape == (720, 1280, 3)


def test_once_the_lores_stream_fails_the_frames_come_in_colour(clock: FakeClock) -> None:
    """The lores copy is read first, so the failing frame is colour too, not grey with no copy."""
    src = opened(clock, [])
    read(src).detector_read(192, None, True)
    assert read(src).pixels.ndim == 2
    cam = FakePicamera2.instances[0]
    assert cam.camera_config is not None
    cam.camera_config["lores"] = None  # the next request has no lores buffer to map
    for _ in range(2):  # the stream is left unused from then on
        frame = read(src)
        assert frame.lores is None
        assert frame.pixels.shape == (720, 1280, 3)


def test_a_failed_grey_conversion_leaves_nothing_half_written(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = opened(clock, [np.full((720, 1280, 3), 90, np.uint8)])
    read(src).detector_read(192, None, True)
    written: list[np.ndarray] = []
    convert = cv2.cvtColor

    def failing(src: np.ndarray, code: int, dst: np.ndarray | None = None) -> np.ndarray:
        if code != cv2.COLOR_BGR2GRAY:  # the fake camera's own YUV encoding
            return convert(src, code, dst=dst)
        assert dst is not None
        dst[:100] = 90  # part-way
        written.append(dst)
        raise cv2.error("fake: conversion failed")

    monkeypatch.setattr(cv2, "cvtColor", failing)
    with pytest.raises(cv2.error):
        src.read()
    assert len(written) == 1
    assert not written[0].any()
    assert FakePicamera2.instances[0].outstanding == 0


def test_frame_arrays_are_reused_once_their_frame_is_gone_and_zeroed_on_close(clock: FakeClock) -> None:
    src = opened(clock, [np.full((720, 1280, 3), 77, np.uint8)])
    read(src).detector_read(192, None, True)
    carriers = set()
    for _ in range(6):
        frame = read(src)
        carriers.add(frame.pixels.__array_interface__["data"][0])
        assert frame.pixels is src._pool._buffers[0]  # the colour one left the pool
        with lease(frame):
            pass
        del frame
    assert len(carriers) == 1  # one grey array carried every frame
    held = read(src)
    others = [read(src) for _ in range(3)]  # a frame still held is never copied into
    assert all(f.pixels is not held.pixels for f in others)
    assert (held.pixels == 77).all()
    kept = list(src._pool._buffers)  # what close must zero
    assert any(buf is held.pixels for buf in kept)
    src.close()
    assert not held.pixels.any()
    assert not any(buf.any() for buf in kept)
