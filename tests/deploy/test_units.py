"""The systemd units as systemd reads them: what `systemctl reload` runs, and `systemd-analyze verify`."""

from __future__ import annotations

import configparser
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "emotion-agent.service"

# Stands in for the agent: says when it is ready, then records the signal it gets.
WAITS_FOR_HUP = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *_: (print("reload", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(30)
"""


def service_lines(key: str) -> list[str]:
    """Every value of ``key`` in the unit's [Service] section (systemd allows repeats)."""
    section, found = "", []
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith(f"{key}="):
            found.append(line.split("=", 1)[1])
    return found


def test_systemctl_reload_sends_the_main_process_the_sighup_that_reloads_the_config() -> None:
    """Was: no ExecReload=, so `systemctl reload emotion-agent` failed ("Job type reload is not
    applicable") although the agent reloads its config on SIGHUP (README, agent/service_signals.py)."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    assert unit["Service"]["Type"] == "notify"  # $MAINPID: the agent itself, not a wrapper
    (reload,) = service_lines("ExecReload")
    with subprocess.Popen([sys.executable, "-c", WAITS_FOR_HUP], stdout=subprocess.PIPE, text=True) as agent:
        try:
            assert agent.stdout is not None
            assert agent.stdout.readline() == "ready\n"
            command = [word.replace("$MAINPID", str(agent.pid)) for word in shlex.split(reload)]
            subprocess.run(command, check=True, timeout=10)  # as systemd runs it, with $MAINPID set
            assert agent.stdout.readline() == "reload\n"
            assert agent.wait(timeout=10) == 0
        finally:
            if agent.poll() is None:
                agent.send_signal(signal.SIGKILL)


def test_the_service_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every line is one systemd 252 (Debian 12, Raspberry Pi OS Bookworm) knows, and every command
    exists; ExecStart= points at /bin/true as the venv is not installed here."""
    unit = tmp_path / "emotion-agent.service"
    unit.write_text(UNIT.read_text().replace(
        "ExecStart=/opt/emotion-agent/venv/bin/emotion-agent ", "ExecStart=/bin/true "))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert unit.name not in done.stderr, done.stderr


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def test_a_transient_failure_is_restarted_until_it_clears() -> None:
    """With StartLimitBurst=5 in 10 min and RestartSec=5s, five exit-1 failures in 25 s (a full
    disk at start, a library that fails once) left the unit failed for good, on a device no one
    watches (found by review). The start limit must not trip while Restart= retries."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["RestartPreventExitStatus"] == "2"  # a bad config still stops
    interval = _seconds(unit["Unit"].get("StartLimitIntervalSec", "10s"))
    burst = int(unit["Unit"].get("StartLimitBurst", "5"))
    restart = _seconds(unit["Service"]["RestartSec"])
    assert interval == 0 or restart * burst > interval
