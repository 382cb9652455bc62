"""A crash never writes frames to disk: the agent forbids core dumps itself, and so does the unit.

The real agent is started the way systemd starts it (``--log-format json run -c``, a
``NOTIFY_SOCKET`` it reports READY to), with the core size limit the unit sets and with the
``infinity`` systemd passes when a unit says nothing; it is killed with SIGSEGV while it replays
a clip. A plain Python process under the same limits, in the same folder, leaves a core file:
the control that shows the check can see one.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_service import write_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "emotion-agent.service"
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


def unit_setting(name: str) -> str:
    values = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(f"{name}=")]
    assert len(values) == 1, f"{UNIT.name} must set {name}= exactly once, found {values}"
    return values[0]


def test_the_unit_forbids_core_files_and_swap() -> None:
    assert unit_setting("LimitCORE") == "0"
    assert unit_setting("MemorySwapMax") == "0"


def core_limit(value: str) -> int:
    return resource.RLIM_INFINITY if value == "infinity" else int(value)


def with_core_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: as systemd applies LimitCORE=
        resource.setrlimit(resource.RLIMIT_CORE, (limit, limit))

    return apply


def core_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("core*") if p.is_file()]


def dumps_to_files() -> bool:
    """The kernel writes cores to a file named by core_pattern (not to a pipe such as apport)."""
    return not CORE_PATTERN.read_text().startswith("|")


def test_the_control_process_does_leave_a_core_file(tmp_path: Path) -> None:
    """Without the agent's guard, a SIGSEGV under systemd's default limit writes a core here."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        preexec_fn=with_core_limit(resource.RLIM_INFINITY),  # noqa: PLW1509 - a limit, no threads yet
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"
    proc.send_signal(signal.SIGSEGV)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGSEGV
    if dumps_to_files():
        assert core_files(tmp_path), "the control must leave a core file, else the check below proves nothing"


def wait_ready(server: socket.socket, proc: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if b"READY=1" in server.recv(4096):
                return
        except TimeoutError:
            continue
    raise AssertionError("the agent never reported READY=1")


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["unit", "infinity"])
def test_a_segfaulting_agent_leaves_no_core_file(tmp_path: Path, sample_clip: Path, limit: str) -> None:
    config = write_config(tmp_path, str(sample_clip))
    text = config.read_text().replace("loop: false, realtime: false", "loop: true, realtime: true")
    config.write_text(text)
    notify = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    server.settimeout(0.5)
    value = core_limit(unit_setting("LimitCORE") if limit == "unit" else "infinity")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "--log-format", "json", "run", "-c", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONUNBUFFERED": "1"},
        preexec_fn=with_core_limit(value),  # noqa: PLW1509 - a limit, no threads yet
    )
    try:
        wait_ready(server, proc, time.monotonic() + 120)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        time.sleep(1.0)  # frames are flowing: pixels are in the process's memory now
        proc.send_signal(signal.SIGSEGV)
        _, err = proc.communicate(timeout=60)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGSEGV
    core_line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core_line.split()[4:6] == ["0", "0"], core_line
    said = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    guard = [r for r in said if r["logger"] == "agent.privacy.coredump"]
    assert [(r["msg"], r["dumpable"], r["core_limit"]) for r in guard] == [
        ("core dumps off: a crash cannot write frames to disk", 0, 0)
    ]
    assert core_files(tmp_path) == []


def test_forbidding_core_dumps_is_read_back_from_the_kernel() -> None:
    """In a fresh interpreter (it cannot be undone): dumpable 0 and limit 0, as the kernel says."""
    code = (
        "from agent.privacy.coredump import core_dump_state, forbid_core_dumps\n"
        "before = core_dump_state(); after = forbid_core_dumps()\n"
        "print(before.dumpable, after.dumpable, after.core_soft, after.core_hard, after.safe)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        preexec_fn=with_core_limit(resource.RLIM_INFINITY),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "0", "0", "0", "True"]


def test_reading_the_state_changes_nothing() -> None:
    """In a fresh interpreter (this one may have run the agent in-process already)."""
    code = (
        "import resource\n"
        "from agent.privacy.coredump import core_dump_state\n"
        "before = resource.getrlimit(resource.RLIMIT_CORE)\n"
        "a = core_dump_state(); b = core_dump_state()\n"
        "print(a == b, (a.core_soft, a.core_hard) == before, a.dumpable)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "1"]
