#!/usr/bin/env python3
"""Benchmark of the fleet receiver (issue 17): verified-and-stored messages per second per replica
and end-to-end lag, with simulated devices on a real broker and a real PostgreSQL.

Each simulated device has its own Ed25519 key and audit log; every window is a real signed
``stats`` envelope recorded in that log, and after the last window each device publishes a real
signed audit checkpoint (the receivers verify and cosign it). Everything is signed before the
clock starts, so the figures are the receivers' cost, not the devices'. Time is compressed:
one window a minute per device, a minute lasting ``60 / --speedup`` seconds, so the offered
load is ``devices / 60 * speedup`` messages a second.

Sources: (mqtt) a real mosquitto with three replicas on one ``$share`` group; (nats) a
three-node NATS JetStream cluster (stream replicas 3), devices publishing over its MQTT
listener, replicas on one durable pull consumer. The replicas are real ``python -m agent
collect`` processes on one PostgreSQL.

Lags come from the database: the benchmark adds a ``bench_stored_ms`` column (the insert's
``clock_timestamp()``) to its own throwaway database; ``received_ms`` is the receiver's time
when its worker took the message; the publish time is when the simulated device handed it to
its MQTT client. One host, one clock.

    python tools/fleet_bench.py --devices 1000 10000 --windows 3 --source mqtt nats
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runnable from a checkout: the test helpers start the servers

import json  # noqa: E402

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from agent.crypto import generate_keypair  # noqa: E402
from agent.fleet.store import Store  # noqa: E402
from tests.fleet.replicas import Replica  # noqa: E402
from tests.fleet.servers import Postgres, nats_cluster  # noqa: E402
from tests.fleet.sim import SimDevice  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402

SOURCES = ("mqtt", "nats")
FIRST_WINDOW = 1_800_000_000
STORED_COLUMN = (
    "ALTER TABLE messages ADD COLUMN bench_stored_ms BIGINT "
    "DEFAULT (extract(epoch from clock_timestamp()) * 1000)::bigint"
)


SourceInfo = tuple[dict[str, object], tuple[str, int, MQTTProtocolVersion]]
"""The replicas' ``source`` config, and where and how the devices publish."""


class BenchError(Exception):
    """Bad input or a run that could not complete; one line for the operator."""


@dataclass(frozen=True)
class Message:
    device: str
    seq: int
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class Row:
    device: str
    seq: int
    receiver: str
    received_ms: int
    stored_ms: int


@dataclass(frozen=True)
class Result:
    source: str
    devices: int
    windows: int
    offered_per_s: float
    published: int
    stored: int
    per_replica: dict[str, float]
    receive_to_stored_ms: tuple[float, float, float]  # p50, p95, max
    publish_to_stored_ms: tuple[float, float, float]
    wall_s: float


# --- pure logic ------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and max (nearest rank); zeros for an empty list."""
    if not values:
        return (0.0, 0.0, 0.0)
    ordered = sorted(values)

    def rank(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))])

    return (rank(0.50), rank(0.95), float(ordered[-1]))


def summarise(
    *,
    source: str, devices: int, windows: int, offered: float, published: dict[tuple[str, int], float],
    rows: Sequence[Row],
) -> Result:
    """Rates and lags from what was published (device, seq -> publish time in ms) and stored."""
    per_replica: dict[str, float] = {}
    for receiver in sorted({r.receiver for r in rows}):
        mine = [r for r in rows if r.receiver == receiver]
        span_ms = max(r.stored_ms for r in mine) - min(r.received_ms for r in mine)
        per_replica[receiver] = len(mine) / max(span_ms / 1000, 0.001)
    starts = [published[(r.device, r.seq)] for r in rows if (r.device, r.seq) in published]
    wall_s = (max(r.stored_ms for r in rows) - min(starts)) / 1000 if rows and starts else 0.0
    return Result(
        source=source,
        devices=devices,
        windows=windows,
        offered_per_s=offered,
        published=len(published),
        stored=len(rows),
        per_replica=per_replica,
        receive_to_stored_ms=percentiles([r.stored_ms - r.received_ms for r in rows]),
        publish_to_stored_ms=percentiles(
            [r.stored_ms - published[(r.device, r.seq)] for r in rows if (r.device, r.seq) in published]
        ),
        wall_s=wall_s,
    )


def table(results: Sequence[Result]) -> str:
    """The Markdown table: one row per (source, devices)."""
    head = (
        "| source | devices | windows | offered msg/s | published | stored | stored msg/s per replica "
        "| total stored msg/s | receive→stored ms p50 / p95 / max | publish→stored ms p50 / p95 / max |\n"
        "|---|---:|---:|---:|---:|---:|---|---:|---|---|\n"
    )
    lines = []
    for r in results:
        replicas = ", ".join(f"{v:.0f}" for v in r.per_replica.values()) or "-"
        total = r.stored / r.wall_s if r.wall_s else 0.0
        rs = " / ".join(f"{v:.0f}" for v in r.receive_to_stored_ms)
        ps = " / ".join(f"{v:.0f}" for v in r.publish_to_stored_ms)
        lines.append(
            f"| {r.source} | {r.devices} | {r.windows} | {r.offered_per_s:.0f} | {r.published} | {r.stored} "
            f"| {replicas} | {total:.0f} | {rs} | {ps} |"
        )
    return head + "\n".join(lines) + "\n"


# --- simulated devices -----------------------------------------------------------------------------


def presign(count: int, windows: int, folder: Path, keys_dir: Path) -> list[list[Message]]:
    """Every device's windows (rounds 0..windows-1) and checkpoint (the last round), signed now."""
    rounds: list[list[Message]] = [[] for _ in range(windows + 1)]
    for i in range(count):
        device = SimDevice(f"cam-{i}", folder / f"cam-{i}")
        device.jwk_file(keys_dir)
        for w in range(windows):
            topic, payload = device.window(FIRST_WINDOW + 60 * w)
            rounds[w].append(Message(device.name, int(json.loads(payload)["seq"]), topic, payload, False))
        topic, payload = device.checkpoint()
        rounds[windows].append(Message(device.name, int(json.loads(payload)["seq"]), topic, payload, True))
        device.audit.close()
    return rounds


def _publisher(host: str, port: int, protocol: MQTTProtocolVersion) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=protocol)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    return client


def publish(client: paho.Client, rounds: list[list[Message]], round_s: float) -> dict[tuple[str, int], float]:
    """Spread each round over ``round_s`` seconds (as fast as possible when behind); publish times."""
    sent: dict[tuple[str, int], float] = {}
    infos = []
    start = time.monotonic()
    for n, messages in enumerate(rounds):
        for k, m in enumerate(messages):
            due = start + round_s * (n + k / max(len(messages), 1))
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[(m.device, m.seq)] = time.time() * 1000
            infos.append(client.publish(m.topic, m.payload, qos=1, retain=m.retain))
    for info in infos:
        info.wait_for_publish(120)
    return sent


# --- servers and replicas --------------------------------------------------------------------------


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def mqtt_source(folder: Path, replicas: int) -> Iterator[SourceInfo]:
    broker = Broker(folder / "broker", allow_anonymous=True)
    # mosquitto's defaults would drop QoS 1 messages queued beyond 1000 for a busy replica,
    # and logging every PUBLISH costs the broker more than the benchmark should measure.
    conf = broker.conf.read_text().replace(
        "log_type all", "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe"
    )
    broker.conf.write_text(conf + "max_queued_messages 0\nmax_inflight_messages 100\n")
    with broker:
        source = {"kind": "mqtt", "host": broker.host, "port": broker.port}
        yield source, (broker.host, broker.port, paho.MQTTv5)


@contextmanager
def nats_source(folder: Path, replicas: int) -> Iterator[SourceInfo]:
    nodes = nats_cluster(folder / "nats")
    try:
        for node in nodes:
            node.start()
        time.sleep(2.0)  # the cluster elects its JetStream meta leader
        source: dict[str, object] = {
            "kind": "nats", "servers": [n.url for n in nodes], "replicas": 3, "ack_wait_seconds": 30,
        }
        yield source, ("127.0.0.1", nodes[0].mqtt_port, paho.MQTTv311)
    finally:
        for node in nodes:
            node.stop()


def _running(procs: list[Replica]) -> bool:
    """Whether every replica says it runs; BenchError with its log's end if one has exited
    (a config it refused), instead of waiting out the timeout."""
    for p in procs:
        if p.proc is not None and p.proc.poll() is not None:
            tail = p.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"replica {p.folder.name} exited with {p.proc.returncode}: {' | '.join(tail)}")
    return all("receiver running" in p.log.read_text(errors="replace") for p in procs)


def _subscribed(broker_log: Path, replicas: int) -> bool:
    text = broker_log.read_text(errors="replace") if broker_log.exists() else ""
    return all(f"emotion-agent-fleet-rx-{i} " in text for i in range(1, replicas + 1)) and "$share" in text


def run_one(source_kind: str, devices: int, *, windows: int, speedup: float, replicas: int, timeout: float,
            pg: Postgres, work: tuple[Path, Path]) -> Result:
    """``work``: (the devices' and servers' folder, on tmpfs; the replicas' folder, on a disk:
    a receiver refuses a state_dir under /dev, as the agent does)."""
    folder = work[0] / f"{source_kind}-{devices}"
    rx_folder = work[1] / f"{source_kind}-{devices}"
    keys_dir = folder / "keys"
    rounds = presign(devices, windows, folder / "devices", keys_dir)
    expected = sum(len(r) for r in rounds)
    url = pg.create(f"bench_{source_kind}_{devices}_{int(time.time())}")
    store = Store(url)
    try:
        with store.transaction() as cur:
            cur.execute(STORED_COLUMN)
        witness_key = generate_keypair(folder / "witness").private_path
        make = mqtt_source if source_kind == "mqtt" else nats_source
        with make(folder, replicas) as (source, (host, port, protocol)), ExitStack() as stack:
            procs = [
                Replica(rx_folder / f"rx{i}", f"rx-{i}", source=source, database=url, keys_dir=keys_dir,
                        witness_key=witness_key).start()
                for i in range(1, replicas + 1)
            ]
            for p in procs:
                stack.callback(p.stop)
            _wait("the replicas to start (provisioning every device key)",
                  lambda: _running(procs), timeout)
            if source_kind == "mqtt":
                _wait("the replicas' shared subscriptions",
                      lambda: _subscribed(folder / "broker" / "mosquitto.log", replicas), timeout)
            time.sleep(2.0)
            client = _publisher(host, port, protocol)
            try:
                sent = publish(client, rounds, 60.0 / speedup)
                _wait(f"{expected} stored messages",
                      lambda: int(store.query("SELECT COUNT(*) FROM messages")[0][0]) >= expected, timeout)
            finally:
                client.disconnect()
                client.loop_stop()
        rows = [
            Row(str(d), int(s), str(r), int(rcv), int(st))
            for d, s, r, rcv, st in store.query(
                "SELECT device, seq, receiver, received_ms, bench_stored_ms FROM messages"
            )
        ]
        rejected = int(store.query("SELECT COUNT(*) FROM rejections")[0][0])
    finally:
        store.close()
    if rejected:
        raise BenchError(f"{source_kind}, {devices} devices: {rejected} messages rejected (see the database)")
    return summarise(source=source_kind, devices=devices, windows=windows, offered=devices / 60 * speedup,
                     published=sent, rows=rows)


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--devices", type=int, nargs="+", default=[1000, 10000], help="device counts to run")
    p.add_argument("--windows", type=int, default=3, help="windows per device (then one checkpoint each)")
    p.add_argument("--source", nargs="+", choices=SOURCES, default=list(SOURCES), help="mqtt, nats or both")
    p.add_argument("--speedup", type=float, default=60.0,
                   help="time compression: a minute lasts 60/speedup s (default 60: a window a second)")
    p.add_argument("--replicas", type=int, default=3, help="receiver replicas (default 3)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each step")
    args = p.parse_args(argv)
    for name, low, high in (("devices", 1, 100_000), ("windows", 1, 1000), ("replicas", 1, 9)):
        values = getattr(args, name)
        for v in values if isinstance(values, list) else [values]:
            if not low <= v <= high:
                p.exit(2, f"fleet_bench: --{name} {v}: must be between {low} and {high}\n")
    if not 0 < args.speedup <= 100_000 or args.timeout <= 0:
        p.exit(2, f"fleet_bench: --speedup {args.speedup} / --timeout {args.timeout}: must be positive\n")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp under it
    # device audit logs fsync every entry: on tmpfs that costs nothing (signing is not timed anyway)
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir=shm if shm.is_dir() else None))
    rx_work = Path(tempfile.mkdtemp(prefix="fleet-bench-rx-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="fleet-bench-pg-"))  # its own 0700 folder, given to postgres
    pg = Postgres(pg_dir)
    results: list[Result] = []
    try:
        pg.start()
        for source in args.source:
            for devices in args.devices:
                results.append(run_one(source, devices, windows=args.windows, speedup=args.speedup,
                                       replicas=args.replicas, timeout=args.timeout, pg=pg,
                                       work=(work, rx_work)))
                print(f"done: {source}, {devices} devices", file=sys.stderr, flush=True)
    except BenchError as exc:
        print(f"fleet_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(rx_work, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs; {args.replicas} replicas on PostgreSQL; a minute lasts "
          f"{60 / args.speedup:g} s; every device publishes --windows windows then one audit checkpoint.\n")
    print(table(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
