"""Run `emotion-agent run` against a broker that hangs, send SIGTERM and time the stop as systemd
would (SIGKILL at the unit's TimeoutStopSec=); prints one JSON line: ``{"rc", "took", "killed"}``.

    python -m tests.hung_broker_stop TMP CLIP paused|silent|black-hole

- ``paused``: a real mosquitto the agent connected to, then SIGSTOPped (the kernel still takes
  what fits in its socket buffers).
- ``silent``: a socket that accepts TCP (the kernel's backlog) and never reads or answers, so the
  agent never gets its CONNACK.
- ``black-hole``: ``paused`` with the socket buffers of a link that stopped delivering, whose
  window filled: run in a private network namespace (``unshare --net``) where ``tcp_rmem`` and
  ``tcp_wmem`` are 4 KiB, so paho cannot even write its DISCONNECT.

While the broker hangs the agent is given privacy toggles (SIGUSR1, an even number: the camera
ends on), each a few signed messages, as a busy device would have queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.mosquitto import Broker
from tests.test_service import write_config

SYSTEMD_STOP_S = 20.0
"""The unit's TimeoutStopSec= (systemd/emotion-agent.service): past it systemd SIGKILLs."""
TOGGLES = 10
SMALL_BUFFER = "4096 4096 4096"


@contextlib.contextmanager
def hung_broker(tmp: Path, hang: str) -> Iterator[tuple[int, Callable[[], None], tuple[str, ...]]]:
    """(port, hang it, the log lines that say the agent is up) for one way of hanging."""
    if hang == "silent":
        with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
            yield silent.getsockname()[1], lambda: None, ("agent started",)
        return
    with Broker(tmp / "broker", allow_anonymous=True) as broker:
        yield broker.port, broker.pause, ("agent started", "MQTT connected")


def private_network() -> None:
    """Loopback up, and socket buffers as small as the kernel allows (this namespace only)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for name in ("tcp_rmem", "tcp_wmem"):
        Path(f"/proc/sys/net/ipv4/{name}").write_text(SMALL_BUFFER)


def main(tmp: Path, clip: str, hang: str) -> dict[str, object]:
    if hang == "black-hole":
        private_network()
    log = tmp / "agent.log"
    with hung_broker(tmp, hang) as (port, hang_it, ready):
        path = write_config(tmp, clip)
        path.write_text(path.read_text().replace(
            "mqtt: {enabled: false}",
            f"mqtt: {{host: 127.0.0.1, port: {port}, reconnect_min_seconds: 1, reconnect_max_seconds: 1}}",
        ).replace("loop: false, realtime: false", "loop: true, realtime: true"))
        with log.open("w") as err:
            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=err, env=os.environ)
        deadline = time.monotonic() + 120
        while not all(line in log.read_text() for line in ready):
            if agent.poll() is not None or time.monotonic() > deadline:
                agent.kill()
                return {"rc": agent.wait(), "took": None, "killed": False}
            time.sleep(0.1)
        hang_it()
        for _ in range(TOGGLES):
            agent.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
        time.sleep(1.0)
        sent = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        killed = False
        try:
            agent.wait(SYSTEMD_STOP_S)
        except subprocess.TimeoutExpired:
            agent.kill()  # what systemd does at TimeoutStopSec=
            agent.wait()
            killed = True
        return {"rc": agent.returncode, "took": round(time.monotonic() - sent, 2), "killed": killed}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])))
