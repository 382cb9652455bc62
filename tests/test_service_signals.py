"""The signal handlers a running agent installs (agent/service_signals.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANG_S = 30.0
"""A child that has not answered by then is hung (it takes well under a second)."""


def signals_during_take(mode: str) -> dict[str, object]:
    """tests/signals_during_take.py in a child, killed if it hangs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.signals_during_take", mode],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hung: no answer in {HANG_S:.0f} s (killed)") from None
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    assert result["sent"], "no signal was sent: the traced function was not run"
    return result


def test_a_sighup_arriving_while_a_reload_is_taken_is_kept_and_hangs_nothing() -> None:
    """SIGHUP at every line ``take_reload`` runs, its callees' included. Was: the handler set a
    ``threading.Event`` whose lock ``take_reload``'s ``clear`` held on the same (main) thread:
    the agent hung for good (a second ``systemctl reload`` within a loop turn), SIGTERM's
    handler ran but the loop never came back, and systemd killed it at TimeoutStopSec=. Now a
    handler only appends to a list."""
    result = signals_during_take("hup")
    assert result["first"] is True
    assert result["then"] is True, "a SIGHUP that came while the last one was taken was lost"
    assert result["after"] is False


def test_a_second_sigterm_arriving_while_the_first_is_handled_stops_once_and_hangs_nothing() -> None:
    """SIGTERM at every line the SIGTERM handler runs (Python runs the second handler inside
    the first). Was: both set one ``threading.Event``, the second waiting for the lock the first
    held: the agent hung before its stop began (the window not flushed, SIGKILL at
    TimeoutStopSec=). A SIGINT (Ctrl-C) during systemd's SIGTERM did the same."""
    result = signals_during_take("term")
    assert result["stop"] is True
    assert result["reason"] == "sigterm"
