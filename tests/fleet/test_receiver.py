"""Verify before storing, store once, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.client import topic_matches_sub

from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk
from agent.fleet.inbox import RETAINED_TOPICS, SHARED_TOPICS, Delivery, RetryLater
from agent.fleet.mqtt_inbox import subscriptions
from agent.fleet.nats_inbox import stream_subjects
from agent.fleet.receiver import Receiver
from agent.fleet.registry import Accepted, Refused, Registry
from agent.fleet.rollup import SiteWindow, claim, due_rollups, site_discovery
from agent.fleet.settings import RollupSettings
from agent.fleet.store import Store, StoredMessage
from agent.fleet.witness import Witness
from tests.fleet.servers import Postgres, terminate_connections
from tests.fleet.sim import SimDevice

NOW = 1_800_000_000_000


class Acks:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


Sent = list[tuple[str, bytes]]


def _receiver(store: Store, tmp_path: Path, *, tofu: bool = False) -> tuple[Receiver, Sent]:
    sent: list[tuple[str, bytes]] = []
    registry = Registry(store, trust_first_seen=tofu, max_skew_s=300)
    signer = Signer("rx-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore())
    rx = Receiver(
        "rx-1", store, registry, witness=Witness(store, "w.test", Ed25519PrivateKey.generate()),
        signer=signer, publish=lambda t, p, r: sent.append((t, p)), now_ms=lambda: NOW,
    )
    return rx, sent


def _deliver(rx: Receiver, topic: str, payload: bytes, acks: Acks) -> None:
    rx.handle(Delivery(topic, payload, NOW, acks))


def test_redelivery_and_replicas_store_each_window_once(store: Store, tmp_path: Path) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    other, _ = _receiver(store, tmp_path)  # a second replica on the same database
    acks = Acks()
    windows = [dev.window(60 * i) for i in range(5)]
    for topic, payload in windows:
        _deliver(rx, topic, payload, acks)
        _deliver(other, topic, payload, acks)  # QoS 1 redelivery to another replica
    assert acks.count == 10
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 5
    assert sum(rx.metrics.duplicates.values()) + sum(other.metrics.duplicates.values()) == 5
    assert store.gaps() == []


def _published_suffixes() -> set[str]:
    """Every topic suffix the agent signs and publishes, read from its ``publisher.publish``
    calls (an f-string part is one topic level, ``+``)."""
    root = Path(__file__).resolve().parents[2] / "agent"
    found: set[str] = set()
    for path in root.rglob("*.py"):
        if "fleet" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            t.id: n.value.value
            for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            for t in n.targets if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "publish"):
                continue
            owner = node.func.value
            if not ((isinstance(owner, ast.Name) and owner.id == "publisher")
                    or (isinstance(owner, ast.Attribute) and owner.attr == "publisher")):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                found.add(constants[arg.id])
            elif isinstance(arg, ast.JoinedStr):
                found.add("".join(v.value if isinstance(v, ast.Constant) else "+" for v in arg.values))
            else:
                raise AssertionError(f"{path}:{node.lineno}: cannot tell which topic this publish uses")
    return found


def test_the_receiver_takes_every_signed_topic_the_agent_publishes() -> None:
    """Each signed message takes a sequence number: a topic the receiver does not subscribe to
    is stored nowhere and every message on it is a false gap."""
    published = _published_suffixes()
    assert {"stats", "key", "audit/checkpoint", "key-rotation", "alert/+"} <= published  # the scan works
    assert published == set(SHARED_TOPICS) | set(RETAINED_TOPICS)
    assert not set(SHARED_TOPICS) & set(RETAINED_TOPICS)


def test_alert_states_and_privacy_changes_are_received_stored_and_make_no_gap(
    store: Store, tmp_path: Path
) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    mqtt_filters = [s.split("/", 2)[2] if s.startswith("$share/") else s for s in subscriptions("g")]
    acks = Acks()
    published = [
        dev.window(0),
        dev.message("alert/crowd", {"rule": "crowd", "state": "raised", "since": 60}),
        dev.message("privacy", {"capturing": False, "reason": "schedule"}),
        dev.window(60),
    ]
    for topic, payload in published:
        assert any(topic_matches_sub(f, topic) for f in mqtt_filters), topic
        assert any(_nats_match(p, topic.replace("/", ".")) for p in stream_subjects()), topic
        _deliver(rx, topic, payload, acks)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 4
    assert store.gaps() == []


def _nats_match(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s, strict=False))
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


def test_unverified_messages_are_rejections_never_data(store: Store, tmp_path: Path) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    topic, payload = dev.window(0)
    env = json.loads(payload)
    forged = dict(env, body=dict(env["body"], people=60))
    stranger = SimDevice("lobby-1", tmp_path / "stranger")  # same name, another key
    cases = [
        (topic, json.dumps(forged).encode()),  # altered after signing
        ("emotion-agent/lobby-2/stats", payload),  # moved to another topic
        stranger.window(0),  # unknown key
        (topic, b"not json"),
    ]
    for t, p in cases:
        _deliver(rx, t, p, acks)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 0
    reasons = [r[0] for r in store.query("SELECT reason FROM rejections ORDER BY reason")]
    assert len(reasons) == 4
    assert any("signature does not verify" in r for r in reasons)
    assert any("arrived on" in r for r in reasons)
    assert any("unknown kid" in r for r in reasons)
    # a replayed sequence number with other content is a conflict, not a second row
    _deliver(rx, topic, payload, acks)
    again = SimDevice("lobby-1", tmp_path / "again", key=dev.key)  # same key, numbering restarted
    _deliver(rx, *again.window(999), acks)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 1
    assert any("replay" in r[0] for r in store.query("SELECT reason FROM rejections"))
    assert acks.count == 6


def test_a_receiver_connects_again_after_postgresql_dropped_its_connection(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A PostgreSQL restart or failover: the message that finds the connection broken fails
    (left unacknowledged, delivered again), the next call connects again."""
    store = Store(postgres.create("reconnect"))
    try:
        dev = SimDevice("lobby-1", tmp_path / "dev")
        rx, _ = _receiver(store, tmp_path)
        rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
        acks = Acks()
        _deliver(rx, *dev.window(0), acks)
        terminate_connections(store.url)
        second = dev.window(60)
        with pytest.raises(RetryLater) as lost:  # not a fault of the message: delivered again
            _deliver(rx, *second, acks)
        assert isinstance(lost.value.__cause__, psycopg.Error)
        assert acks.count == 1
        assert store.unreachable_for() > 0
        _deliver(rx, *second, acks)  # the redelivery
        _deliver(rx, *dev.window(120), acks)
        assert acks.count == 3
        assert store.unreachable_for() == 0
        assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 3
    finally:
        store.close()


def test_a_reserialised_copy_of_a_stored_message_is_a_duplicate_not_a_replay(
    store: Store, tmp_path: Path
) -> None:
    """Receivers must not depend on the wire bytes (docs/signed-messages.md, section 4): a copy
    re-ordered or re-spaced on its way (a bridge, a recorder) is the same signed message."""
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    topic, payload = dev.window(0)
    _deliver(rx, topic, payload, acks)
    env = json.loads(payload)
    pretty = json.dumps(env, indent=1).encode()
    reordered = json.dumps(dict(reversed(env.items()))).encode()
    for copy in (pretty, reordered, payload):
        _deliver(rx, topic, copy, acks)
    assert store.query("SELECT reason FROM rejections") == []
    assert sum(rx.metrics.duplicates.values()) == 3
    again = SimDevice("lobby-1", tmp_path / "again", key=dev.key)  # same seq, other content
    _deliver(rx, *again.window(999), acks)
    assert [r[0].split(":")[0] for r in store.query("SELECT reason FROM rejections")] == ["replay"]


def test_rows_stored_before_the_canonical_hash_still_tell_copies_from_replays(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of an older receiver kept only the wire bytes' hash: it is migrated, and its
    rows still compare (the agent publishes the JCS bytes, so that hash is the JCS form's)."""
    import agent.fleet.store as store_mod  # noqa: PLC0415

    dev = SimDevice("lobby-1", tmp_path / "dev")
    topic, payload = dev.window(0)
    env = json.loads(payload)
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:1])
    old = Store(store_url)
    with old.transaction() as cur:  # what the older receiver stored
        old.execute(
            cur,
            "INSERT INTO messages (device, boot, seq, kid, typ, topic, ts, body, payload_sha256, "
            "received_ms, receiver) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (env["dev"], env["boot"], env["seq"], env["kid"], env["typ"], topic, env["ts"],
             json.dumps(env["body"]), hashlib.sha256(payload).hexdigest(), NOW, "rx-0"),
        )
    old.close()
    monkeypatch.undo()
    store = Store(store_url)
    try:
        assert store.query("SELECT MAX(version) FROM schema_migrations")[0][0] == store_mod.MIGRATIONS[-1][0]
        rx, _ = _receiver(store, tmp_path)
        rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
        acks = Acks()
        for copy in (payload, json.dumps(env, indent=1).encode()):
            _deliver(rx, topic, copy, acks)
        assert sum(rx.metrics.duplicates.values()) == 2
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
        again = SimDevice("lobby-1", tmp_path / "again", key=dev.key)
        _deliver(rx, *again.window(999), acks)
        assert "replay" in store.query("SELECT reason FROM rejections")[0][0]
    finally:
        store.close()


def test_gaps_are_reported_where_messages_were_dropped(store: Store, tmp_path: Path) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    for i in range(10):
        topic, payload = dev.window(60 * i)
        if i not in (3, 4, 7):
            _deliver(rx, topic, payload, acks)
    assert [(g.first, g.last) for g in store.gaps()] == [(4, 5), (8, 8)]


def test_first_seen_key_and_signed_rotation(store: Store, tmp_path: Path) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, _ = _receiver(store, tmp_path, tofu=True)
    acks = Acks()
    _deliver(rx, *dev.message("key", {"jwk": public_jwk(dev.key.public_key())}), acks)
    _deliver(rx, *dev.window(0), acks)
    new = Ed25519PrivateKey.generate()
    announcement = dev.signer.rotate(new, dev.topic("key-rotation"))
    _deliver(rx, dev.topic("key-rotation"), encode(announcement), acks)
    _deliver(rx, *dev.window(60), acks)  # signed by the new key
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 4
    # another device cannot claim lobby-1's slot by announcing a key of its own
    intruder = SimDevice("lobby-1", tmp_path / "intruder")
    _deliver(rx, *intruder.message("key", {"jwk": public_jwk(intruder.key.public_key())}), acks)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 4
    assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 1


def test_two_replicas_never_trust_two_first_seen_keys_for_one_device(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replicas asked "has lobby-1 a key?" before either recorded one: each trusted the key
    it was handling, the device's and an impostor's announcing the same name."""
    real = SimDevice("lobby-1", tmp_path / "real")
    intruder = SimDevice("lobby-1", tmp_path / "intruder")  # same name, its own key
    msgs = [d.message("key", {"jwk": public_jwk(d.key.public_key())}) for d in (real, intruder)]
    stores = [Store(store_url), Store(store_url)]
    registries = [Registry(s, trust_first_seen=True, max_skew_s=300) for s in stores]
    barrier, real_has = threading.Barrier(2, timeout=3), Store.device_has_key

    def has_key(self: Store, device: str) -> bool:
        answer = real_has(self, device)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()  # both replicas asked before either recorded its key
        return answer

    monkeypatch.setattr(Store, "device_has_key", has_key)
    results: list[Accepted | Refused | None] = [None, None]

    def check(i: int) -> None:
        results[i] = registries[i].check(msgs[i][1], msgs[i][0], NOW)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        owners = stores[0].query("SELECT device FROM device_keys")
        assert owners == [("lobby-1",)], f"{len(owners)} keys trusted on first use for lobby-1"
        assert sorted(type(r).__name__ for r in results) == ["Accepted", "Refused"]
        refused = next(r for r in results if isinstance(r, Refused))
        assert "already has a key" in refused.reason
    finally:
        for s in stores:
            s.close()


def test_checkpoints_are_cosigned_and_published_back(store: Store, tmp_path: Path) -> None:
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, sent = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    _deliver(rx, *dev.window(0), acks)
    _deliver(rx, *dev.checkpoint(), acks)
    _deliver(rx, *dev.window(60), acks)
    _deliver(rx, *dev.checkpoint(), acks)
    cosigs = [p for t, p in sent if t == "emotion-agent/lobby-1/audit/cosignature"]
    assert len(cosigs) == 2
    assert store.query("SELECT COUNT(*) FROM witness")[0][0] == 1


def test_a_checkpoint_redelivered_after_its_witness_step_failed_is_cosigned(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row was committed, then the witness step failed (the database or the replica went
    away): the redelivery is a duplicate row but must still be witnessed, or the device's next
    checkpoint proves from a size the witness never cosigned and is refused for ever."""
    dev = SimDevice("lobby-1", tmp_path / "dev")
    rx, sent = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    _deliver(rx, *dev.window(0), acks)
    _deliver(rx, *dev.checkpoint(), acks)
    _deliver(rx, *dev.window(60), acks)
    second = dev.checkpoint()
    real_add, calls = Witness.add, []

    def failing_once(self: Witness, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            lost = sqlite3.OperationalError if store.dialect == "sqlite" else psycopg.OperationalError
            raise lost("the database connection was lost")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(Witness, "add", failing_once)
    with pytest.raises(RetryLater):
        _deliver(rx, *second, acks)  # not acknowledged: delivered again
    assert acks.count == 3
    _deliver(rx, *second, acks)
    assert sum(rx.metrics.duplicates.values()) == 1
    _deliver(rx, *dev.window(120), acks)
    _deliver(rx, *dev.checkpoint(), acks)  # proves from the second checkpoint's size
    assert store.query("SELECT kind, detail FROM witness_events") == []
    assert len([t for t, _ in sent if t.endswith("/audit/cosignature")]) == 3
    assert acks.count == 6


def _site_devices(store: Store, tmp_path: Path, n: int) -> tuple[list[SimDevice], Receiver]:
    """``n`` devices cam-0.. whose keys a receiver on ``store`` trusts."""
    devs = [SimDevice(f"cam-{i}", tmp_path / f"cam{i}") for i in range(n)]
    rx, _ = _receiver(store, tmp_path)
    for d in devs:
        d.jwk_file(tmp_path / "keys")
    rx.registry.provision(tmp_path / "keys", NOW)
    return devs, rx


def test_site_rollup_sums_published_windows_once(store: Store, tmp_path: Path) -> None:
    devs, rx = _site_devices(store, tmp_path, 3)
    acks = Acks()
    start = NOW // 1000 - 600
    for d, people in zip(devs, (6, None, 8), strict=True):
        _deliver(rx, *d.window(start, people), acks)
    due = due_rollups(store, {"hall": [d.name for d in devs]}, NOW, 60_000)
    assert len(due) == 1
    body = due[0].to_body()
    assert (body["people"], body["suppressed_devices"], body["devices"]) == (14, 1, 3)
    assert claim(store, due[0], "rx-1") is True
    assert claim(store, due[0], "rx-2") is False  # another replica was second
    assert due_rollups(store, {"hall": [d.name for d in devs]}, NOW, 60_000) == []


def test_a_signed_stats_body_site_rollups_cannot_read_is_rejected_never_stored(
    store: Store, tmp_path: Path
) -> None:
    dev = SimDevice("cam-1", tmp_path / "c1")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if dev.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    start = NOW // 1000 - 600
    odd = [
        ({"start": start, "people": 6}, "window_start"),
        ({"window_start": start, "window_end": "x", "people": 6, "votes": None}, "window_end"),
        ({"window_start": start, "window_end": start - 60, "people": 6, "votes": None}, "before"),
        ({"window_start": start, "window_end": start + 60, "people": True, "votes": None}, "people"),
        ({"window_start": start, "window_end": start + 60, "people": 6, "votes": {"happy": -1}}, "votes"),
        ({"window_start": start, "window_end": start + 60, "people": 6, "votes": [6]}, "votes"),
        # found by a hostile-input probe: other names were summed and signed into the site's
        # window (a gender, 15,000 made-up keys), and 2**53-1 people ended collect at the sum
        ({"window_start": start, "window_end": start + 60, "people": 6, "votes": {"male": 3}}, "votes"),
        ({"window_start": start, "window_end": start + 60, "people": 2**53 - 1, "votes": None}, "people"),
        ({"window_start": start, "window_end": start + 60, "people": 6, "votes": {"happy": 2**40}}, "votes"),
    ]
    for body, _ in odd:
        _deliver(rx, *dev.message("stats", body), acks)
    _deliver(rx, *dev.window(start), acks)
    _deliver(rx, *dev.window(start + 60, None), acks)  # suppressed: people and votes null
    assert acks.count == len(odd) + 2
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 2
    reasons = [str(r[0]) for r in store.query("SELECT reason FROM rejections")]
    assert len(reasons) == len(odd)
    for _, word in odd:
        assert any(r.startswith("stats body") and word in r for r in reasons), (word, reasons)


def test_a_device_that_published_one_window_twice_is_counted_once(store: Store, tmp_path: Path) -> None:
    """Three signed stats of one device for one window (seq 1, 2, 3) made a site window of
    "devices": 3, "people": 21 (found by a hostile-input probe). A device counts once per
    window, with the last it published (highest boot, then seq)."""
    devs, rx = _site_devices(store, tmp_path, 2)
    acks = Acks()
    start = NOW // 1000 - 600
    for people in (7, 7, 9):
        _deliver(rx, *devs[0].window(start, people), acks)
    _deliver(rx, *devs[1].window(start, 5), acks)
    (window,) = due_rollups(store, {"hall": [d.name for d in devs]}, NOW, 60_000)
    assert (window.devices, window.people) == (2, 14)
    assert window.votes == {"happy": 4 + 2, "neutral": 5 + 3}


def test_a_device_restarted_inside_a_window_adds_both_parts_and_counts_once(
    store: Store, tmp_path: Path
) -> None:
    """A restart inside a window publishes the part before it at the stop and the part after it
    under the new boot, both with the same window_start: keeping only the last boot's dropped
    the first part's people (found by review). Parts of different boots add up; the device
    counts once; within one boot the last published stands."""
    devs, rx = _site_devices(store, tmp_path, 1)
    acks = Acks()
    start = NOW // 1000 - 600
    _deliver(rx, *devs[0].window(start, 4), acks)  # boot 1, before the restart
    devs[0].signer = Signer(devs[0].name, devs[0].key, store=MemorySequenceStore(boot=2))
    _deliver(rx, *devs[0].window(start, None), acks)  # boot 2: too few after it, suppressed
    _deliver(rx, *devs[0].window(start, 3), acks)  # boot 2 again, sent once more: the last stands
    (window,) = due_rollups(store, {"hall": [devs[0].name]}, NOW, 60_000)
    assert (window.devices, window.suppressed_devices, window.people) == (1, 0, 7)
    assert window.votes == {"happy": 2 + 1, "neutral": 2 + 2}


def test_a_site_window_that_cannot_be_signed_is_logged_and_the_receiver_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Signing raised out of ``roll_up`` and ended ``collect`` (exit 1), and the claimed window
    was never published. Stored stats are bounded now, so this takes a forced failure."""
    from agent.errors import PayloadError  # noqa: PLC0415
    from agent.fleet import service as fleet_service  # noqa: PLC0415
    from tests.fleet.test_service_inbox import DyingInbox, settings  # noqa: PLC0415

    fleet = settings(tmp_path).model_copy(update={"rollup": RollupSettings(sites={"hall": ["cam-0"]})})
    svc = fleet_service.FleetService(fleet, inbox=DyingInbox())
    try:
        dev = SimDevice("cam-0", tmp_path / "cam0")
        dev.jwk_file(tmp_path / "keys")
        svc.registry.provision(tmp_path / "keys", NOW)
        _deliver(svc.receiver, *dev.window(int(time.time()) - 600, 6), Acks())

        def refuse(*_a: Any, **_k: Any) -> Any:
            raise PayloadError("body.people: integer is outside ±(2**53 - 1)")

        svc.signer.sign = refuse  # type: ignore[method-assign]
        assert svc.roll_up() == 0
        assert any("could not be signed" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        svc.stop()


def test_site_rollups_leave_out_a_stored_stats_body_they_cannot_read(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored before the receiver checked stats bodies: it must not stop the rollups (collect
    called them outside any try and died with a KeyError, on every restart)."""
    good = SimDevice("cam-1", tmp_path / "c1")
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(tmp_path / "keys" if good.jwk_file(tmp_path / "keys") else tmp_path, NOW)
    acks = Acks()
    start = NOW // 1000 - 600
    _deliver(rx, *good.window(start), acks)
    for seq, body in enumerate(('{"people":6,"start":1}', '{"window_start":1,"window_end":"2"}', "[1]"), 1):
        topic = "emotion-agent/cam-2/stats"
        old = StoredMessage("cam-2", 1, seq, "k", "stats", topic, NOW, body, "0" * 64, NOW)
        assert store.insert_message(old, "rx-0") == "stored"
    unreadable: set[tuple[str, int, int]] = set()
    for _ in range(2):
        due = due_rollups(store, {"hall": ["cam-1", "cam-2"]}, NOW, 60_000, unreadable)
        assert [(w.people, w.devices) for w in due] == [(6, 1)]
    assert unreadable == {("cam-2", 1, 1), ("cam-2", 1, 2), ("cam-2", 1, 3)}
    assert len([r for r in caplog.records if "leaves out" in r.getMessage()]) == 3  # once each


def test_the_receiver_never_imports_camera_vision_or_privacy() -> None:
    """A receiver sees only what devices publish (DESIGN.md): its imports stay in the lower rooms."""


    allowed = ("agent.fleet", "agent.crypto", "agent.audit", "agent.errors", "agent.emotions", "agent.clock",
               "agent.atomic", "agent.settings_base", "agent.user_files", "agent.strict_yaml", "agent.logs",
               "agent.log_throttle",
               "agent.broker_files",  # the password and TLS files, checked as the agent's
               "agent.mqtt_client",  # paho, and its client that keeps the socket error
               "agent.state_dir")  # the system folders a SQLite path must not be relative to
    root = Path(__file__).resolve().parents[2] / "agent" / "fleet"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [f"{node.module}"] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.startswith("agent") and name != "agent":
                    assert name.startswith(allowed), f"{path.name} imports {name}"


def test_site_rollups_are_discoverable_by_home_assistant() -> None:
    topic, payload = site_discovery("hall-a", "rx-1")
    assert topic == "homeassistant/device/emotion_agent_site_hall_a/config"
    config = json.loads(payload)
    body = SiteWindow("hall-a", 0, 60, 3, 1, 14, {"happy": 7}).to_body()
    values = {
        name: jinja2.Template(c["value_template"]).render(value_json={"body": body})
        for name, c in config["cmps"].items()
    }
    assert values == {"people": "14", "devices": "3", "suppressed_devices": "1"}
    assert all(c["state_topic"] == "emotion-agent/site/hall-a/stats" for c in config["cmps"].values())
    assert len({c["unique_id"] for c in config["cmps"].values()}) == 3
