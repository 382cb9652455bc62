"""A receiver whose inbox stopped for good, or whose database stays unreachable, exits non-zero
(systemd restarts it) instead of running on, "receiver running" in its log, with no message
coming in or every message left unacknowledged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import agent.fleet.service as service_mod
from agent.crypto import generate_keypair
from agent.fleet.inbox import Delivery, Handler, RetryLater
from agent.fleet.service import INBOX_FAILED, FleetService
from agent.fleet.settings import FleetSettings
from tests.fleet.servers import Postgres, terminate_connections
from tests.fleet.sim import SimDevice

ROOT = Path(__file__).resolve().parents[2]


class DyingInbox:
    """Starts, then stops for good a moment later, as NatsInbox does when it cannot work."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.stopped = False

    def start(self, handler: Handler) -> None:
        threading.Timer(0.2, self._die).start()

    def _die(self) -> None:
        self.error = ModuleNotFoundError("No module named 'nats'")

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


def settings(tmp_path: Path, database: str | None = None, keys_dir: Path | None = None) -> FleetSettings:
    key = generate_keypair(tmp_path / "key")
    return FleetSettings.model_validate({
        "receiver_id": "rx-1",
        "source": {"kind": "nats", "servers": ["nats://127.0.0.1:1"]},
        "database": database or f"sqlite:///{tmp_path / 'fleet.db'}",
        "state_dir": str(tmp_path / "state"),
        "private_key": str(key.private_path),
        "registry": {"keys_dir": str(keys_dir) if keys_dir else None},
        "http": {"port": 0},
    })


def test_a_receiver_whose_inbox_stopped_for_good_exits_non_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = DyingInbox()
    service = FleetService(settings(tmp_path), inbox=inbox)
    caplog.set_level("INFO", logger="agent.fleet.service")
    assert service.run() == INBOX_FAILED != 0
    assert inbox.stopped
    assert service.witness is not None
    said = f"witness verifier key {service.witness.vkey}: list it in the devices' audit.witnesses"
    assert said in caplog.text


class FailoverInbox:
    """Ends the receiver's database connections and forbids new ones (PostgreSQL gone for
    good), then delivers a message, as an inbox would, which fails and stays unacknowledged."""

    def __init__(self, url: str, message: tuple[str, bytes], give_up: threading.Event) -> None:
        self.url, self.message, self.give_up = url, message, give_up
        self.error: BaseException | None = None
        self.acks = 0

    def start(self, handler: Handler) -> None:
        threading.Thread(target=self._feed, args=(handler,), daemon=True).start()

    def _feed(self, handler: Handler) -> None:
        other = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(other, autocommit=True) as admin:
            admin.execute("ALTER DATABASE unreachable ALLOW_CONNECTIONS false")
        terminate_connections(self.url, via=other)
        while not self.give_up.is_set():
            try:
                handler(Delivery(*self.message, int(time.time() * 1000), self._ack))
            except RetryLater:  # what both inboxes do: log it, leave it unacknowledged
                self.give_up.wait(0.2)

    def _ack(self) -> None:
        self.acks += 1

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        pass

    def stop(self) -> None:
        self.give_up.set()


def test_a_receiver_whose_database_stays_unreachable_exits_non_zero(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_mod, "DATABASE_LOST_AFTER_S", 1.5, raising=False)
    monkeypatch.setattr(service_mod, "ROLLUP_EVERY_S", 0.1)
    url = postgres.create("unreachable")
    dev = SimDevice("lobby-1", tmp_path / "dev")
    dev.jwk_file(tmp_path / "keys")
    give_up = threading.Event()
    inbox = FailoverInbox(url, dev.window(0), give_up)
    service = FleetService(settings(tmp_path, url, tmp_path / "keys"), inbox=inbox)
    watchdog = threading.Timer(20, service.stop_requested.set)  # never exits: the test fails, not hangs
    watchdog.start()
    try:
        started = time.monotonic()
        assert service.run() == 1  # DATABASE_LOST: systemd's Restart=on-failure starts it again
        assert 1.5 <= time.monotonic() - started < 15
        assert inbox.acks == 0
    finally:
        watchdog.cancel()
        give_up.set()
        with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
            admin.execute("ALTER DATABASE unreachable ALLOW_CONNECTIONS true")


def test_a_second_sigterm_while_the_first_is_handled_stops_the_receiver_and_hangs_nothing(
    tmp_path: Path,
) -> None:
    """The receiver's handler set a threading.Event: a SIGTERM arriving inside the first one's
    set() waited for the lock the interrupted set() held, and the receiver hung for good, deaf
    to SIGTERM (found by review). tests/fleet_signals_during_stop.py raises SIGTERM at every
    line the handler runs."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.fleet_signals_during_stop", str(tmp_path)],
            capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("hung: no answer in 30 s (killed)")
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0
    assert outcome["sent"] >= 1, outcome  # the handler ran and was interrupted at its lines
