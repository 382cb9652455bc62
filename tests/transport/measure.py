"""Transport figures for the docs: spool write cost and backlog drain rate through TLS.

    .venv/bin/python -m tests.transport.measure [--messages 2000]

Not a test (no assertions on speed); prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from agent.clock import SystemClock
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig, TlsConfig
from agent.transport.spool import Spool
from tests.mosquitto import ACL_PER_DEVICE, Broker, make_pki, wait_until

PAYLOAD = b"x" * 300  # about the size of a signed window


def spool_put_ms(folder: Path, n: int) -> float:
    spool = Spool(folder / "bench.sqlite3", SystemClock(), max_bytes=10**9, max_age_seconds=86400)
    start = time.perf_counter()
    for _ in range(n):
        spool.put("emotion-agent/bench/stats", PAYLOAD)
    elapsed = time.perf_counter() - start
    spool.close()
    return elapsed * 1000 / n


def drain_rate(folder: Path, n: int) -> tuple[float, float]:
    pki = make_pki(folder / "pki", clients=("bench",))
    broker = Broker(folder / "broker", pki=pki, users={"bench": "pw"}, acl=ACL_PER_DEVICE)
    (folder / "pw").write_text("pw")
    (folder / "pw").chmod(0o600)
    cert, key = pki.clients["bench"]
    cfg = MqttConfig(host=broker.host, port=broker.port, username="bench", password_file=folder / "pw",
                     tls=TlsConfig(ca=pki.ca, cert=cert, key=key), reconnect_min_seconds=1,
                     reconnect_max_seconds=1)
    out = MqttOutput(cfg, device_id="bench", state_dir=folder / "state", spool_days=7, clock=SystemClock())
    out.start()  # broker not started yet: everything is spooled
    for _ in range(n):
        out.send(Message(f"{out.base_topic}/stats", PAYLOAD))
    backlog_bytes = out.health().spool_bytes
    with broker:
        start = time.perf_counter()
        wait_until(lambda: out.health().backlog == 0, 600, "drain")
        elapsed = time.perf_counter() - start
    out.stop()
    return n / elapsed, backlog_bytes / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        put_ms = spool_put_ms(folder, args.messages)
        rate, kib = drain_rate(folder, args.messages)
    print(json.dumps({
        "messages": args.messages,
        "spool_put_ms_each": round(put_ms, 3),
        "backlog_kib": round(kib, 1),
        "drain_msgs_per_s_tls_incl_reconnect_wait": round(rate, 1),
    }))


if __name__ == "__main__":
    main()
