"""Three receiver replicas on a three-node NATS JetStream cluster (Debian's nats-server), stream
replicas 3, devices publishing unchanged over the servers' MQTT listener: one replica killed and
one server node killed mid-run, and every window is stored exactly once in PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.crypto import generate_keypair
from agent.fleet.store import Store
from tests.fleet.replicas import Replica, wait_rows
from tests.fleet.servers import Postgres, nats_cluster
from tests.fleet.sim import SimDevice
from tests.mosquitto import wait_until

DEVICES = 6
WINDOWS = 24
DROPPED = {(1, 5), (4, 11), (4, 12)}


def _mqtt(port: int, cid: str) -> paho.Client:
    # NATS' MQTT listener speaks 3.1.1 (the agent's protocol: auto falls back to it)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311,
                         clean_session=False)
    client.reconnect_delay_set(0.2, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.mark.slow
def test_jetstream_replicas_store_each_window_once_through_a_node_failure(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create("fleet_nats")
    Store(url).close()
    nodes = [n.start() for n in nats_cluster(tmp_path / "nats")]
    keys_dir = tmp_path / "keys"
    devices = [SimDevice(f"cam-{i}", tmp_path / f"cam{i}") for i in range(DEVICES)]
    for d in devices:
        d.jwk_file(keys_dir)
    witness_key = generate_keypair(tmp_path / "witness").private_path
    source = {"kind": "nats", "servers": [n.url for n in nodes], "replicas": 3, "ack_wait_seconds": 3}
    replicas: list[Replica] = []
    try:
        time.sleep(2.0)  # the cluster elects its JetStream meta leader
        replicas = [Replica(tmp_path / f"rx{i}", f"rx-{i}", source=source, database=url, keys_dir=keys_dir,
                            witness_key=witness_key).start() for i in (1, 2, 3)]
        wait_until(lambda: all("receiver running" in r.log.read_text() for r in replicas), timeout=60,
                   what="three replicas running")
        time.sleep(2.0)
        pub = _mqtt(nodes[0].mqtt_port, "sim-devices")
        published = 0
        seqs: dict[tuple[int, int], int] = {}
        for w in range(WINDOWS):
            for i, d in enumerate(devices):
                topic, payload = d.window(1_800_000_000 + 60 * w)
                seqs[(i, w)] = json.loads(payload)["seq"]
                if (i, w) not in DROPPED:
                    pub.publish(topic, payload, qos=1).wait_for_publish(30)
                    published += 1
            if w == 6:
                replicas[0].kill()
            if w == 10:
                nodes[2].kill()  # a server node dies; the stream keeps two copies
            if w == 15:
                replicas[0].start()
            if w in (8, 20):
                for d in devices:
                    pub.publish(*d.checkpoint(), qos=1, retain=True).wait_for_publish(30)
                    published += 1
        stored = wait_rows(url, published, timeout=120)
        pub.loop_stop()
    finally:
        for r in replicas:
            r.stop()
        for n in nodes:
            n.stop()
    store = Store(url)
    assert stored == published, f"stored {stored} of {published}"
    assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
    missing = {(g.device, s) for g in store.gaps() for s in range(g.first, g.last + 1)}
    assert missing == {(devices[i].name, seqs[(i, w)]) for i, w in DROPPED}
    assert len(store.query("SELECT origin FROM witness")) == DEVICES
    store.close()
