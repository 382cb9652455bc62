"""The state_dir scan finds real encoded images and clips wherever they are, and nothing else."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.audit.imagescan import image_format, scan_state


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """What a real state_dir holds: JSON, JSON lines, SQLite, notes."""
    root = tmp_path / "state"
    (root / "audit").mkdir(parents=True)
    (root / "audit" / "segment-000000000000.jsonl").write_text('{"data":{},"i":0}\n')
    (root / "audit" / "checkpoints.log").write_text("emotion-agent/x/audit\n1\nAAAA\n")
    (root / "dp_budget.json").write_text('{"day": "2026-12-05", "spent_micro": 0}')
    with sqlite3.connect(root / "spool.sqlite") as db:
        db.execute("create table t (x)")
    db.close()
    return root


def test_a_clean_state_dir_has_no_image(state: Path) -> None:
    scan = scan_state(state)
    assert (scan.files, scan.images, scan.first_image) == (4, 0, None)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp", ".ppm"])
def test_an_encoded_real_image_anywhere_is_found(state: Path, media: Path, ext: str) -> None:
    pixels = cv2.imread(str(media / "astronaut.png"))
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    hidden = state / "audit" / "cache"
    hidden.mkdir()
    (hidden / "blob.bin").write_bytes(data.tobytes())  # the name says nothing: the bytes do
    scan = scan_state(state)
    assert (scan.files, scan.images, scan.first_image) == (5, 1, "audit/cache/blob.bin")


def test_a_video_and_a_dumped_array_are_found(state: Path, tmp_path: Path) -> None:
    clip = str(state / "x.avi")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 32))
    writer.write(np.full((32, 32, 3), 200, np.uint8))
    writer.release()
    np.save(state / "frame.npy", np.zeros((4, 4, 3), np.uint8))
    scan = scan_state(state)
    assert scan.images == 2


def test_text_and_database_headers_are_not_images() -> None:
    headers = (b'{"day": "2026-', b"SQLite format 3\0", b"emotion-agent/x", b"BMW is not a bmp", b"PK\x03")
    for header in headers:
        assert image_format(header) is None, header
