"""Power-loss tests: a signer killed with SIGKILL, at random moments or at chosen steps of the
sequence reservation, never hands out a seq twice after restart.

SIGKILL stops the process but not the kernel, so these prove the crash ordering; writing the
state with fsync before the rename, and fsyncing the folder after it, is what carries the
argument to a real power cut (not run here: no way to cut power to the test machine).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.crypto.seqstore import STATE_NAME

CHILD = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from agent.crypto import Signer
key = Ed25519PrivateKey.from_private_bytes(bytes(32))
signer = Signer("lobby-1", key, sys.argv[1], block=int(sys.argv[2]))
while True:
    env = signer.sign("stats", "emotion-agent/lobby-1/stats", {"n": 1})
    sys.stdout.write(f"{env['boot']} {env['seq']}\\n")
    sys.stdout.flush()
"""


def _handed_out(out: str) -> list[tuple[int, int]]:
    lines = out.split("\n")[:-1]  # a line cut by the kill has no newline: not counted
    return [(int(b), int(s)) for b, s in (line.split() for line in lines)]


def _kill_after(state: Path, block: int, delay: float, wait_first: bool) -> list[tuple[int, int]]:
    """Start a signer, SIGKILL it after delay seconds (from its first message if wait_first)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), str(block)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    first = child.stdout.readline() if wait_first else ""
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return _handed_out(first + out)


def _kill_at_syscall(state: Path, syscall: str, nth: int) -> list[tuple[int, int]]:
    """Run a signer (block 1) under strace, which SIGKILLs it on entering its nth `syscall`."""
    command = [
        "strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
        "-e", f"inject={syscall}:signal=SIGKILL:when={nth}",
        sys.executable, "-c", CHILD, str(state), "1",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr  # strace dies of the signal it injected
    return _handed_out(run.stdout)


class Ledger:
    """Everything handed out so far, checked after each restart."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.boots: list[int] = []

    def add(self, run: list[tuple[int, int]]) -> None:
        seqs = [seq for _, seq in run]
        assert seqs == sorted(set(seqs)), f"seq must grow within a run: {seqs}"
        if seqs:
            assert not self.seqs or seqs[0] > max(self.seqs), f"restart reused a seq: {seqs[0]}"
            assert len({b for b, _ in run}) == 1
            assert not self.boots or run[0][0] > self.boots[-1], "boot must grow at every start"
            self.boots.append(run[0][0])
        self.seqs += seqs


@pytest.mark.slow
@pytest.mark.parametrize("block", [1, 7])
def test_sigkill_at_random_moments_never_reuses_a_seq(tmp_path: Path, block: int) -> None:
    rng = random.Random(block)  # noqa: S311 - kill timing, not keys
    ledger = Ledger()
    torn = 0
    for i in range(20):
        ledger.add(_kill_after(tmp_path, block, rng.uniform(0.0, 0.15), wait_first=i % 2 == 0))
        torn += (tmp_path / (STATE_NAME + ".tmp")).exists()
    ledger.add(_kill_after(tmp_path, block, 0.2, wait_first=True))
    assert len(ledger.seqs) == len(set(ledger.seqs)) > 20
    assert len(ledger.boots) >= 11
    sys.stderr.write(f"block {block}: {len(ledger.seqs)} seqs, {torn} kills inside a state write\n")


@pytest.mark.slow
def test_sigkill_at_each_step_of_the_reservation_never_reuses_a_seq(tmp_path: Path) -> None:
    """Killed on entering write (state not written), fsync (written, not durable; or renamed,
    folder not synced) or rename (durable temp file, old state still current)."""
    rng = random.Random(4)  # noqa: S311 - which call to kill on, not keys
    ledger = Ledger()
    for syscall in ("write", "fsync", "rename"):
        for nth in sorted(rng.sample(range(1, 16), 5)):
            ledger.add(_kill_at_syscall(tmp_path, syscall, nth))
    ledger.add(_kill_after(tmp_path, 1, 0.1, wait_first=True))
    assert len(ledger.boots) >= 10
    assert len(ledger.seqs) == len(set(ledger.seqs))
