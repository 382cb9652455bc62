"""Run the receiver, send it SIGTERM, and deliver SIGTERM again at every line its handler runs,
down into what that calls; print how ``run`` ended (one JSON line).

    python -m tests.fleet_signals_during_stop DIR

Python runs a handler on the main thread between two bytecodes of whatever runs there: a
handler that waits for a lock held there (``threading.Event.set`` inside the first one's
``set``) waits for ever. So this runs as a child of tests/fleet/test_service_inbox.py, under a
time limit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from agent.crypto import generate_keypair
from agent.fleet.service import FleetService
from agent.fleet.settings import FleetSettings


class QuietInbox:
    """Starts and delivers nothing."""

    error: BaseException | None = None

    def start(self, handler: Any) -> None:
        pass

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        pass

    def stop(self) -> None:
        pass


def handler_code() -> CodeType | None:
    handler: Any = signal.getsignal(signal.SIGTERM)
    func = getattr(handler, "__func__", handler)
    return getattr(func, "__code__", None)


def main(folder: Path) -> dict[str, object]:
    key = generate_keypair(folder / "key")
    settings = FleetSettings.model_validate({
        "receiver_id": "rx-1",
        "source": {"kind": "nats", "servers": ["nats://127.0.0.1:1"]},
        "database": f"sqlite:///{folder / 'fleet.db'}",
        "state_dir": str(folder / "state"),
        "private_key": str(key.private_path),
        "http": {"port": 0},
    })
    service = FleetService(settings, inbox=QuietInbox())
    state = {"inside": False, "done": False, "sent": 0}

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is handler_code() and not state["done"]:
            state["inside"] = True
        if not state["inside"]:
            return tracer if event == "call" else None
        if event == "return" and frame.f_code is handler_code():
            state["inside"], state["done"] = False, True
        signal.raise_signal(signal.SIGTERM)  # the handler runs again here, at this line
        state["sent"] += 1
        return tracer

    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    sys.settrace(tracer)
    try:
        code = service.run()
    finally:
        sys.settrace(None)
    return {"code": code, **state}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
