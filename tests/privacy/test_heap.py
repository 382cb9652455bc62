"""When privacy mode pauses capture, the decoder's own copy of the last frame leaves the process.

A subprocess replays a lossless marked clip through the service's camera feed and capture gate,
zeroes every frame it is handed (as the lease does), then turns privacy mode on, which closes
the camera. It counts the marker's bytes in its own readable memory (``/proc/self/mem``) before
the camera opens, while it is open, and after it closed. With the guard ``run`` installs
(``unmap_freed_frames``) the decoder's buffers are unmapped when released and the count is back
to what it was before the camera opened; without it (the control) the freed copy stays.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_no_retention import marker, write_clip

SCRIPT = r"""
import re, sys
if sys.argv[2] == "guard":
    from agent.privacy.heap import unmap_freed_frames
    assert unmap_freed_frames()
from agent.camera.base import SourceOptions
from agent.camera.feed import CameraFeed
from agent.clock import SystemClock
from agent.privacy.gate import CaptureGate
from agent.privacy.lease import lease
from agent.privacy.privacy_mode import PrivacyMode

needle = bytes.fromhex(sys.argv[3])  # the only copy the script itself holds


def count():
    found = 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            start, end, perms = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line).groups()
            if "r" not in perms or "[v" in line:
                continue
            try:
                mem.seek(int(start, 16))
                found += mem.read(int(end, 16) - int(start, 16)).count(needle)
            except OSError:
                continue
    return found


clock = SystemClock()
feed = CameraFeed(sys.argv[1], SourceOptions(realtime=False), clock)
mode = PrivacyMode(clock)
gate = CaptureGate(feed, mode, clock)
before = count()
gate.update()
for _ in range(3):
    frame = feed.next_frame()
    with lease(frame):
        pass
del frame
capturing = count()
mode.set("signal", True)
gate.update()
print(before, capturing, count(), feed.state.value)
"""


@pytest.fixture(scope="module")
def marked_clip(tmp_path_factory: pytest.TempPathFactory, media: Path) -> tuple[Path, str]:
    clip = tmp_path_factory.mktemp("heap") / "marked.avi"
    write_clip(clip, media, frames=6)
    return clip, marker()[0].tobytes()[:32].hex()


def counts(clip: Path, needle: str, mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(clip), mode, needle],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_pausing_capture_leaves_no_copy_of_the_last_frame_in_memory(marked_clip: tuple[Path, str]) -> None:
    before, capturing, paused, state = counts(*marked_clip, "guard")
    assert state == "closed"
    assert int(capturing) > int(before), "while capturing, the decoder's copy is there (and is found)"
    assert paused == before


def test_control_without_the_guard_the_freed_copy_stays(marked_clip: tuple[Path, str]) -> None:
    before, capturing, paused, _ = counts(*marked_clip, "none")
    assert int(capturing) > int(before)
    assert int(paused) > int(before)
