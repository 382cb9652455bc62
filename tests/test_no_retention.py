"""The no-retention proof (issue 6, item 5): run the agent's vision stage on a clip whose frames
carry a known pixel marker, under strace, and show that no file anywhere received image data.

The clip is lossless (FFV1), so the decoded frames hold the marker's exact bytes: had any code
path written a frame, a crop or a row of pixels to a file, the marker would be on disk or in a
traced write to a regular file. The real astronaut face is in the frame so the whole pipeline
(detector, alignment, emotion model) runs on it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.crypto import generate_keypair

MARKER_SIDE = 48


def marker() -> np.ndarray:
    """48x48 BGR pixels of a SHA-256 stream: bytes no real image or log would contain."""
    stream = b"".join(hashlib.sha256(b"emotion-agent marker %d" % i).digest() for i in range(216))
    return np.frombuffer(stream[: MARKER_SIDE * MARKER_SIDE * 3], np.uint8).reshape(
        MARKER_SIDE, MARKER_SIDE, 3
    )


def write_clip(path: Path, media: Path, frames: int = 8) -> bytes:
    """A 640x360 lossless clip: the astronaut's face plus the marker; returns one marker row."""
    face = cv2.imread(str(media / "astronaut.png"))
    assert face is not None
    face = cv2.resize(face[0:300, 100:360], (208, 240))
    mark = marker()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 5, (640, 360))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((360, 640, 3), 110, np.uint8)
        frame[60:300, 200 + i * 4 : 408 + i * 4] = face
        frame[8 : 8 + MARKER_SIDE, 8 : 8 + MARKER_SIDE] = mark
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(path))
    ok, decoded = capture.read()
    capture.release()
    assert ok
    assert np.array_equal(decoded[8 : 8 + MARKER_SIDE, 8 : 8 + MARKER_SIDE], mark), "clip is not lossless"
    return mark[0].tobytes()  # one row: 144 bytes as they sit in the frame buffer


def files_with(needle: bytes, *dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("*") if p.is_file() and needle in p.read_bytes()]


WRITE = re.compile(
    r'^\d+\s+(?:write|pwrite64|writev|pwritev2?)\(\d+<([^>]*)>,\s*(?:\[\{iov_base=)?"((?:[^"\\]|\\.)*)"'
)


def traced_writes(log: str) -> list[tuple[str, bytes]]:
    """(target of the fd, first bytes written) for every write in an ``strace -y -x`` log."""
    out = []
    for line in log.splitlines():
        m = WRITE.match(line)
        if m:
            data = codecs.escape_decode(m.group(2).encode("latin-1"))[0]
            out.append((m.group(1), bytes(data)))
    return out


def traced(tmp_path: Path, cmd: list[str]) -> tuple[subprocess.CompletedProcess[bytes], str, list[Path]]:
    """Run ``cmd`` under strace in an empty cwd with empty HOME and TMPDIR; return the process,
    the trace and those three folders."""
    dirs = [tmp_path / n for n in ("cwd", "home", "tmp")]
    for d in dirs:
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    # bytecode caches are code, not data; keep them out of the trace
    env |= {"HOME": str(dirs[1]), "TMPDIR": str(dirs[2]), "PYTHONDONTWRITEBYTECODE": "1"}
    trace = tmp_path / "strace.log"
    calls = "trace=write,pwrite64,writev,pwritev,pwritev2,openat,mmap,sendfile,copy_file_range"
    strace = ["strace", "-f", "-y", "-x", "-s", "64", "-e", calls, "-o", str(trace)]
    done = subprocess.run(strace + cmd, cwd=dirs[0], env=env, capture_output=True, timeout=300, check=False)
    return done, trace.read_text(), dirs


OTHER_WAYS = re.compile(
    r"^\d+\s+(?:mmap\(.*PROT_WRITE.*MAP_SHARED.*, \d+</(?!dev/)[^>]*>"
    r"|(?:sendfile|copy_file_range)\(\d+</(?!dev/)[^>]*>)"
)


def other_writes(log: str) -> list[str]:
    """Ways to put bytes in a file without write(): a shared writable mapping of a file, or
    sendfile / copy_file_range into one."""
    return [line for line in log.splitlines() if OTHER_WAYS.match(line)]


def to_files(writes: list[tuple[str, bytes]]) -> list[str]:
    """Targets of writes that went to a file on disk (-y names every fd: pipe:[…], /dev/…, /path)."""
    return [t for t, _ in writes if t.startswith("/") and not t.startswith("/dev/")]


def carries(row: bytes, writes: list[tuple[str, bytes]]) -> bool:
    """Does any traced write hold a 16-byte piece of the marker row?"""
    pieces = [row[i : i + 16] for i in range(0, len(row) - 16, 8)]
    return any(piece in data for _, data in writes for piece in pieces)


@pytest.mark.slow
def test_analyze_on_a_marked_clip_writes_no_image_data_to_any_file(tmp_path: Path, media: Path) -> None:
    clip_dir = tmp_path / "input"
    clip_dir.mkdir()
    row = write_clip(clip_dir / "marked.avi", media)
    cmd = [sys.executable, "-m", "agent", "analyze", str(clip_dir / "marked.avi"), "--json"]
    done, log, dirs = traced(tmp_path, cmd)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    frames = [json.loads(line) for line in done.stdout.decode().splitlines()[:-1]]
    assert len(frames) == 8
    assert sum(len(f["faces"]) for f in frames) >= 6  # the face was found: the pipeline ran
    assert re.search(r"openat\(.*marked\.avi", log)  # and it read the marked clip
    writes = traced_writes(log)
    assert any(t.startswith("pipe:") and d.startswith(b'{"frame"') for t, d in writes)  # parsing works
    assert to_files(writes) == []
    assert other_writes(log) == []
    assert not carries(row, writes)
    assert [p for d in dirs for p in d.rglob("*")] == []
    assert files_with(row, *dirs, clip_dir) == []  # not even the clip: it is compressed


@pytest.mark.slow
def test_the_trace_check_catches_a_program_that_keeps_pixels(tmp_path: Path) -> None:
    """Negative control: a program that writes one marker row to a temp file is caught."""
    row = marker()[0].tobytes()
    keep = "import sys, tempfile; tempfile.NamedTemporaryFile(delete=False).write(bytes.fromhex(sys.argv[1]))"
    done, log, dirs = traced(tmp_path, [sys.executable, "-c", keep, row.hex()])
    assert done.returncode == 0, done.stderr.decode()
    writes = traced_writes(log)
    assert any(t.startswith(str(dirs[2])) for t in to_files(writes))
    assert carries(row, writes)
    assert len(files_with(row, *dirs)) == 1


@pytest.mark.slow
def test_the_running_agent_keeps_no_image_and_its_audit_log_verifies(tmp_path: Path, media: Path) -> None:
    """`emotion-agent run` on the marked clip: the only files it writes are its state (audit log,
    counters, spool) and the output it was told to write, and none of them holds a marker piece;
    then the audit log it wrote verifies, accounts for every frame, and its scans of state_dir
    found no image."""
    clip_dir = tmp_path / "input"
    clip_dir.mkdir()
    row = write_clip(clip_dir / "marked.avi", media, frames=25)
    keys = tmp_path / "keys"
    generate_keypair(keys)
    state, out = tmp_path / "state", tmp_path / "out.jsonl"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""schema_version: 1
device_id: marker-test
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{clip_dir / "marked.avi"}", fps: 5, loop: false, realtime: false}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "{out}"}}
keys: {{private_key: "{keys / "device.key"}"}}
state_dir: "{state}"
"""
    )
    done, log, dirs = traced(tmp_path, [sys.executable, "-m", "agent", "run", "-c", str(config)])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    writes = traced_writes(log)
    written = sorted({t for t in to_files(writes)})
    assert written, "the agent writes its state: the trace must show it"
    assert all(t.startswith((str(state), str(out))) for t in written), written
    assert not carries(row, writes)
    assert [p for d in dirs for p in d.rglob("*")] == []
    assert files_with(row, state, out.parent / "out.jsonl", *dirs) == []
    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "audit",
            "verify",
            str(state / "audit"),
            "--pubkey",
            str(keys / "device.pub.jwk"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    entries = [
        json.loads(line)
        for p in sorted((state / "audit").glob("segment-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    frames = [e["data"] for e in entries if e["kind"] == "frames"]
    assert sum(f["captured"] for f in frames) == 25
    assert all(f["state_image_files"] == 0 and f["state_files_scanned"] > 0 for f in frames)
    assert sum(f["analysed"] + f["dropped"] + f["discarded"] for f in frames) == 25
    kinds = [e["kind"] for e in entries]
    assert kinds[1] == "start"
    assert set(kinds[kinds.index("stop") + 1 :]) <= {"publish"}  # the close checkpoint's own publish
    assert "warning" not in audit.stdout  # every entry, that publish included, is signed


@pytest.mark.slow
def test_the_trace_check_catches_a_shared_writable_mapping_of_a_file(tmp_path: Path) -> None:
    """Negative control for the mmap path: numpy.memmap of a file in TMPDIR is caught."""
    keep = (
        "import sys, tempfile, numpy as np; f = tempfile.NamedTemporaryFile(delete=False); "
        "m = np.memmap(f.name, dtype=np.uint8, mode='w+', shape=(144,)); "
        "m[:] = np.frombuffer(bytes.fromhex(sys.argv[1]), np.uint8); m.flush()"
    )
    row = marker()[0].tobytes()
    done, log, dirs = traced(tmp_path, [sys.executable, "-c", keep, row.hex()])
    assert done.returncode == 0, done.stderr.decode()
    assert len(other_writes(log)) == 1
    assert str(dirs[2]) in other_writes(log)[0]
    assert len(files_with(row, *dirs)) == 1
