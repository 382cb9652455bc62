"""sd_notify: the datagrams systemd would receive, on a real AF_UNIX socket."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, watchdog_interval


def test_ready_watchdog_and_status_reach_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    notifier = Notifier(path)
    notifier.ready("models loaded, camera open")
    notifier.watchdog()
    notifier.status("analysing 5 fps")
    got = [server.recv(4096).decode() for _ in range(3)]
    notifier.close()
    server.close()
    assert got == ["READY=1\nSTATUS=models loaded, camera open", "WATCHDOG=1", "STATUS=analysing 5 fps"]


def test_without_systemd_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()  # must not raise


def test_watchdog_interval_is_half_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval(None) is None
