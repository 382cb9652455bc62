"""Three receiver replicas on a three-node NATS JetStream cluster (Debian's nats-server), stream
replicas 3, devices publishing unchanged over the servers' MQTT listener, one replica killed and
restarted and one server node killed mid-run; every window stored at most once in PostgreSQL.

Which node dies decides what NATS can keep, so each case is its own test (the node is chosen
by its role, not left to where the cluster happened to place the stream's leader):

- a follower of the stream dies: every window is stored exactly once;
- the stream's leader dies: until a new leader is elected (a few seconds) the MQTT listener
  acknowledges a device's message that no stream stores (docs/fleet.md). The receivers must
  ride through the election and store everything after it, and every window lost in it must
  show as a sequence gap: lost, never silently.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.crypto import generate_keypair
from agent.fleet.store import Store
from tests.fleet.replicas import Replica, wait_rows
from tests.fleet.servers import NatsNode, Postgres, nats_cluster
from tests.fleet.sim import SimDevice
from tests.mosquitto import wait_until

DEVICES = 6
WINDOWS = 24
DROPPED = {(1, 5), (4, 11), (4, 12)}
STREAM = "EMOTION_AGENT"
NODE_DIES_AT = 10
LAST_WINDOWS = range(20, WINDOWS)
"""Published once the stream has a leader again: stored whichever node died."""
ELECTION_S = 120
"""Bound on waiting for a JetStream leader (the cluster's, a stream's). About 2 s on an idle
host; on a busy 2-core one a three-replica election can take several rounds of NATS' election
timeouts, and 30 s once ran out."""


def _mqtt(port: int, cid: str) -> paho.Client:
    # NATS' MQTT listener speaks 3.1.1 (the agent's protocol: auto falls back to it)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311,
                         clean_session=False)
    client.reconnect_delay_set(0.2, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _publish(client: paho.Client, topic: str, payload: bytes, *, retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(30)
    assert info.is_published(), f"no PUBACK for {topic} within 30 s"  # the device would resend


def stream_leader(nodes: list[NatsNode]) -> str | None:
    async def ask() -> str | None:
        import nats  # noqa: PLC0415

        nc = await nats.connect(servers=[n.url for n in nodes])
        try:
            info = await nc.jetstream().stream_info(STREAM)
            return None if info.cluster is None else info.cluster.leader
        finally:
            await nc.close()

    return asyncio.run(ask())


@dataclass
class Run:
    published: set[tuple[int, int]] = field(default_factory=set)
    """(device, window) published and acknowledged by the MQTT listener."""
    seqs: dict[tuple[int, int], int] = field(default_factory=dict)
    replica_logs: list[str] = field(default_factory=list)
    replicas_alive: list[bool] = field(default_factory=list)
    checkpoints: int = 0


def run_cluster(tmp_path: Path, url: str, victim_role: str) -> tuple[Run, list[SimDevice]]:
    """Publish ``WINDOWS`` windows of ``DEVICES`` devices (minus ``DROPPED``) while replica 1 is
    killed at window 6 and restarted at 15, and at window ``NODE_DIES_AT`` the node that is the
    stream's ``leader`` or a ``follower`` is killed; windows 11-19 go out at once, the last
    ones once the stream has a leader again. The devices publish on a node that stays."""
    Store(url).close()
    nodes = [n.start() for n in nats_cluster(tmp_path / "nats")]
    keys_dir = tmp_path / "keys"
    devices = [SimDevice(f"cam-{i}", tmp_path / f"cam{i}") for i in range(DEVICES)]
    for d in devices:
        d.jwk_file(keys_dir)
    witness_key = generate_keypair(tmp_path / "witness").private_path
    source = {"kind": "nats", "servers": [n.url for n in nodes], "replicas": 3, "ack_wait_seconds": 3}
    replicas: list[Replica] = []
    run = Run()
    try:
        # the cluster elects its JetStream meta leader (about 2 s idle): a stream is created after
        wait_until(lambda: _jetstream_answers(nodes), timeout=ELECTION_S, what="the JetStream meta leader")
        replicas = [Replica(tmp_path / f"rx{i}", f"rx-{i}", source=source, database=url, keys_dir=keys_dir,
                            witness_key=witness_key).start() for i in (1, 2, 3)]
        wait_until(lambda: all("receiver running" in r.log.read_text() for r in replicas), timeout=60,
                   what="three replicas running")
        # the replicas create the stream (each retries with backoff until it can); its leader's
        # name is the one the wait read: asked again, the stream may be between two leaders
        leader = wait_for_stream_leader(nodes)
        followers = [n for n in nodes if n.name != leader]
        victim = next(n for n in nodes if n.name == leader) if victim_role == "leader" else followers[1]
        survivors = [n for n in nodes if n is not victim]
        events: dict[int, Callable[[], object]] = {
            6: replicas[0].kill,
            NODE_DIES_AT: victim.kill,
            15: replicas[0].start,
            # what follows is published with a stream leader in office
            LAST_WINDOWS[0] - 1: lambda: wait_for_stream_leader(survivors),
        }
        pub = _mqtt(followers[0].mqtt_port, "sim-devices")
        for w in range(WINDOWS):
            _publish_window(pub, devices, w, run)
            events.get(w, lambda: None)()
            if w in (8, 20):
                for d in devices:
                    _publish(pub, *d.checkpoint(), retain=True)
                    run.checkpoints += 1
        expected = len(run.published) + run.checkpoints
        wait_rows(url, expected, timeout=60 if victim_role == "follower" else 20)
        pub.loop_stop()
        run.replicas_alive = [r.proc is not None and r.proc.poll() is None for r in replicas]
    finally:
        for r in replicas:
            r.stop()
        for n in nodes:
            n.stop()
        run.replica_logs = [r.log.read_text() for r in replicas]
    return run, devices


def _publish_window(pub: paho.Client, devices: list[SimDevice], w: int, run: Run) -> None:
    for i, d in enumerate(devices):
        topic, payload = d.window(1_800_000_000 + 60 * w)
        run.seqs[(i, w)] = json.loads(payload)["seq"]
        if (i, w) not in DROPPED:
            _publish(pub, topic, payload)
            run.published.add((i, w))


def _jetstream_answers(nodes: list[NatsNode]) -> bool:
    """Whether every node answers JetStream requests: clustered, only once a meta leader is known."""
    import nats  # noqa: PLC0415

    async def ask(url: str) -> None:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            await nc.jetstream(timeout=2).account_info()
        finally:
            await nc.close()

    try:
        for n in nodes:
            asyncio.run(ask(n.url))
    except Exception:  # no meta leader yet (503) or no answer in time
        return False
    return True


def wait_for_stream_leader(nodes: list[NatsNode], timeout: float = ELECTION_S) -> str:
    """The name of the stream's leader once it is one of ``nodes``, asking until ``timeout``; a
    stream not created yet, an election under way or an answer late are asked again, and the
    last answer is in the failure."""
    names = {n.name for n in nodes}
    answer = "none"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader = stream_leader(nodes)
        except Exception as exc:  # not created yet, no leader to answer, or late
            answer = f"{type(exc).__name__}: {exc}"
        else:
            if leader is not None and leader in names:
                return leader
            answer = f"leader {leader!r}"
        time.sleep(0.2)
    raise AssertionError(f"no leader of stream {STREAM} among {sorted(names)} after {timeout} s: {answer}")


def stored_windows(store: Store, devices: list[SimDevice], run: Run) -> set[tuple[int, int]]:
    rows = {(str(d), int(s)) for d, s in store.query("SELECT device, seq FROM messages")}
    return {(i, w) for (i, w), seq in run.seqs.items() if (devices[i].name, seq) in rows}


def gap_windows(store: Store, devices: list[SimDevice], run: Run) -> set[tuple[int, int]]:
    missing = {(g.device, s) for g in store.gaps() for s in range(g.first, g.last + 1)}
    return {(i, w) for (i, w), seq in run.seqs.items() if (devices[i].name, seq) in missing}


def assert_receivers_rode_through(run: Run) -> None:
    assert all(run.replicas_alive), run.replicas_alive
    for log in run.replica_logs:
        assert "NATS inbox stopped" not in log
        assert "receiver stopping" not in log


@pytest.mark.slow
def test_a_follower_node_dying_loses_no_window_and_stores_none_twice(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create("fleet_nats_follower")
    run, devices = run_cluster(tmp_path, url, "follower")
    store = Store(url)
    try:
        assert stored_windows(store, devices, run) == run.published
        assert store.query("SELECT COUNT(*) FROM messages")[0][0] == len(run.published) + run.checkpoints
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
        assert gap_windows(store, devices, run) == DROPPED
        assert len(store.query("SELECT origin FROM witness")) == DEVICES
    finally:
        store.close()
    assert_receivers_rode_through(run)


@pytest.mark.slow
def test_the_stream_leader_dying_loses_windows_only_in_the_election_and_each_shows_as_a_gap(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create("fleet_nats_leader")
    run, devices = run_cluster(tmp_path, url, "leader")
    store = Store(url)
    try:
        stored = stored_windows(store, devices, run)
        lost = run.published - stored
        assert stored <= run.published  # nothing that was not published
        assert store.query("SELECT COUNT(*) FROM messages")[0][0] == len(stored) + run.checkpoints
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
        assert all(w >= NODE_DIES_AT for _, w in lost), sorted(lost)  # only after the node died
        assert {(i, w) for (i, w) in run.published if w in LAST_WINDOWS} <= stored
        assert gap_windows(store, devices, run) == DROPPED | lost  # every lost window is a gap
    finally:
        store.close()
    assert_receivers_rode_through(run)


def test_an_older_receivers_stream_gets_the_subjects_it_lacks_and_carries_them(tmp_path: Path) -> None:
    """A stream made by a receiver that knew fewer topics (no ``privacy``, no ``alert/<rule>``)
    is given the missing subjects when a newer receiver starts; ``alert/+`` is ``alert.*``."""
    import nats  # noqa: PLC0415
    from nats.js.api import StreamConfig  # noqa: PLC0415

    from agent.fleet.inbox import Delivery  # noqa: PLC0415
    from agent.fleet.nats_inbox import NatsInbox, stream_subjects  # noqa: PLC0415
    from agent.fleet.settings import NatsSourceSettings  # noqa: PLC0415

    node = NatsNode(tmp_path, "solo", 0, []).start()
    older = [f"emotion-agent.*.{t}" for t in ("stats", "alert", "health", "privacy_mode", "key")]
    operators = "site.extra"

    async def stream_of_an_older_receiver() -> list[str]:
        nc = await nats.connect(node.url)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name=STREAM, subjects=[*older, operators], num_replicas=1))
            return list((await js.stream_info(STREAM)).config.subjects or [])
        finally:
            await nc.close()

    inbox: NatsInbox | None = None
    got: list[Delivery] = []
    try:
        assert asyncio.run(stream_of_an_older_receiver()) == [*older, operators]
        source = NatsSourceSettings.model_validate({"kind": "nats", "servers": [node.url], "replicas": 1})
        inbox = NatsInbox(source, "rx-test")
        inbox.start(lambda d: (got.append(d), d.ack()))
        assert inbox.ready.wait(15)
        device = _mqtt(node.mqtt_port, "lobby-1")
        for suffix in ("alert/crowd", "privacy", "stats"):
            _publish(device, f"emotion-agent/lobby-1/{suffix}", suffix.encode())
        device.loop_stop()
        wait_until(lambda: len(got) == 3, timeout=15, what="three deliveries")
    finally:
        if inbox is not None:
            inbox.stop()
        subjects = asyncio.run(_subjects(node.url))
        node.stop()
    suffixes = ("alert/crowd", "privacy", "stats")
    assert sorted(d.topic for d in got) == [f"emotion-agent/lobby-1/{s}" for s in suffixes]
    assert set(subjects) == {*stream_subjects(), operators}
    assert "emotion-agent.*.alert.*" in subjects


async def _subjects(url: str) -> list[str]:
    import nats  # noqa: PLC0415

    nc = await nats.connect(url)
    try:
        return list((await nc.jetstream().stream_info(STREAM)).config.subjects or [])
    finally:
        await nc.close()
