"""A receiver whose inbox stopped for good exits non-zero (systemd restarts it) instead of
running on, "receiver running" in its log, with no message coming in."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.crypto import generate_keypair
from agent.fleet.inbox import Handler
from agent.fleet.service import INBOX_FAILED, FleetService
from agent.fleet.settings import FleetSettings


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


def settings(tmp_path: Path) -> FleetSettings:
    key = generate_keypair(tmp_path / "key")
    return FleetSettings.model_validate({
        "receiver_id": "rx-1",
        "source": {"kind": "nats", "servers": ["nats://127.0.0.1:1"]},
        "database": f"sqlite:///{tmp_path / 'fleet.db'}",
        "state_dir": str(tmp_path / "state"),
        "private_key": str(key.private_path),
        "http": {"port": 0},
    })


def test_a_receiver_whose_inbox_stopped_for_good_exits_non_zero(tmp_path: Path) -> None:
    inbox = DyingInbox()
    service = FleetService(settings(tmp_path), inbox=inbox)
    assert service.run() == INBOX_FAILED != 0
    assert inbox.stopped
