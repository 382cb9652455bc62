"""Review: hostile input to the fleet receiver (each test fails on the reviewed code)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.note import sign_checkpoint
from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk
from agent.crypto.verify import MAX_LINE_BYTES
from agent.errors import KeyFileError
from agent.fleet.inbox import MAX_DELIVERIES, Delivery, RetryLater
from agent.fleet.nats_inbox import NatsInbox
from agent.fleet.registry import DEVICE_ID
from agent.fleet.settings import NatsSourceSettings
from agent.fleet.store import MAX_REASON_CHARS, Store, sanitise
from agent.fleet.web import render_page
from tests.fleet.servers import NatsNode, Postgres, terminate_connections
from tests.fleet.test_receiver import NOW, Acks, _deliver, _receiver


def _device(tmp_path: Path, name: str = "lobby-1", boot: int = 1,
            key: Ed25519PrivateKey | None = None) -> tuple[Ed25519PrivateKey, Signer, Path]:
    key = key or Ed25519PrivateKey.generate()
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / f"{name}.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    return key, Signer(name, key, store=MemorySequenceStore(boot=boot)), keys


def test_unsigned_payload_with_nul_in_a_key_is_rejected_not_redelivered(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Anyone who can publish: a NUL in a JSON key ends up in the rejection reason, which
    PostgreSQL TEXT cannot hold; handle() raises, the message is never acked (JetStream
    redelivers it for ever) and no rejection is recorded."""
    store = Store(postgres.create("review_nul"))
    try:
        rx, _ = _receiver(store, tmp_path)
        acks = Acks()
        _deliver(rx, "emotion-agent/lobby-1/stats", b'{"\\u0000":9007199254740993}', acks)
        assert acks.count == 1
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 1
    finally:
        store.close()


def test_rejection_reasons_are_escaped_and_capped(store: Store) -> None:
    assert sanitise("key '\x00\ud800\n' bad") == "key '\\x00\\ud800\\n' bad"
    assert len(sanitise("x" * 10_000)) == MAX_REASON_CHARS
    store.reject(payload_sha256="0" * 64, topic="emotion-agent/a\x00/stats", device="a\x00",
                 reason="\x00" * 10_000, received_ms=NOW, receiver="rx-1")
    ((topic, device, reason),) = store.query("SELECT topic, device, reason FROM rejections")
    assert (topic, device) == ("emotion-agent/a\\x00/stats", "a\\x00")
    assert reason.startswith("\\x00\\x00")
    assert len(reason) == MAX_REASON_CHARS


def test_checkpoint_size_beyond_bigint_does_not_poison_the_consumer(store: Store, tmp_path: Path) -> None:
    """A device-signed checkpoint whose tree size is 19 digits (accepted by the note parser,
    up to 10**19-1) overflows BIGINT / SQLite INTEGER in the witness insert: handle() raises
    after the message row was committed, so every redelivery raises again (poison)."""
    key, signer, keys = _device(tmp_path)
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    note = sign_checkpoint("emotion-agent/lobby-1", 2**63, b"\x01" * 32, key).note
    topic = "emotion-agent/lobby-1/audit/checkpoint"
    payload = encode(signer.sign("audit-checkpoint", topic, {"note": note.decode()}))
    acks = Acks()
    _deliver(rx, topic, payload, acks)
    assert acks.count == 1


def test_forged_topics_do_not_grow_per_device_counters_without_bound(store: Store, tmp_path: Path) -> None:
    """Unsigned garbage on made-up device topics: each new topic level becomes a new key of
    metrics.rejected (a /metrics label) for ever; anyone can exhaust memory / the scraper."""
    rx, _ = _receiver(store, tmp_path)
    acks = Acks()
    for i in range(300):
        _deliver(rx, f"emotion-agent/\u200bfake-{i}/stats", b"x", acks)
    assert acks.count == 300
    assert len(rx.metrics.rejected) < 50


def test_fork_signed_with_an_older_seq_is_recorded_not_ignored_as_stale(store: Store, tmp_path: Path) -> None:
    """Same tree size, other root, signed by the device: a fork whatever its (boot, seq).
    The witness calls it 'stale' because its boot is lower than the head's, so the fork is
    neither recorded in witness_events nor alerted."""
    key = Ed25519PrivateKey.generate()
    _, new_boot, keys = _device(tmp_path, boot=5, key=key)
    old_boot = Signer("lobby-1", key, store=MemorySequenceStore(boot=1))
    rx, sent = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    topic = "emotion-agent/lobby-1/audit/checkpoint"
    origin = "emotion-agent/lobby-1"
    head = sign_checkpoint(origin, 10, hashlib.sha256(b"a").digest(), key).note
    fork = sign_checkpoint(origin, 10, hashlib.sha256(b"b").digest(), key).note
    acks = Acks()
    _deliver(rx, topic, encode(new_boot.sign("audit-checkpoint", topic, {"note": head.decode()})), acks)
    _deliver(rx, topic, encode(old_boot.sign("audit-checkpoint", topic, {"note": fork.decode()})), acks)
    kinds = [r[0] for r in store.query("SELECT kind FROM witness_events")]
    assert kinds == ["fork"], (kinds, dict(rx.metrics.witness))
    assert [t for t, _ in sent if t.endswith("/alert")] == ["emotion-agent-fleet/rx-1/alert"]


def test_oversized_signed_payload_is_rejected(store: Store, tmp_path: Path) -> None:
    """No size bound in the receiver (verify has MAX_LINE_BYTES = 256 KiB): a device may store
    megabytes per message in `messages.body`, read again by every rollup query."""
    _, signer, keys = _device(tmp_path)
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    topic = "emotion-agent/lobby-1/stats"
    body = {"window_start": 0, "window_end": 60, "people": None, "votes": None, "pad": "x" * 2_000_000}
    acks = Acks()
    _deliver(rx, topic, encode(signer.sign("stats", topic, body)), acks)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 0
    assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 1


def test_a_message_the_receiver_fails_on_is_rejected_and_acknowledged(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poison: an unexpected error on a message is recorded (its type as the reason), acked."""
    _, signer, keys = _device(tmp_path)
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)

    def boom(*args: object) -> None:
        raise KeyError("\x00bug")

    monkeypatch.setattr(rx, "_accept", boom)
    topic = "emotion-agent/lobby-1/stats"
    acks = Acks()
    _deliver(rx, topic, encode(signer.sign("stats", topic, {"window_start": 0, "window_end": 60})), acks)
    assert acks.count == 1
    assert store.query("SELECT reason FROM rejections") == [("receiver error: KeyError",)]


def test_a_database_outage_is_retried_not_rejected(postgres: Postgres, tmp_path: Path) -> None:
    """The database away is no fault of the message: RetryLater, unacknowledged, no rejection."""
    url = postgres.create("review_outage")
    store = Store(url)
    try:
        rx, _ = _receiver(store, tmp_path)
        acks = Acks()
        terminate_connections(url)
        with pytest.raises(RetryLater):
            _deliver(rx, "emotion-agent/lobby-1/stats", b"x", acks)
        assert acks.count == 0
        assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0  # connects again
    finally:
        store.close()


def test_a_locked_database_is_retried(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx, _ = _receiver(store, tmp_path)

    def locked(**kwargs: object) -> None:
        raise (sqlite3.OperationalError if store.dialect == "sqlite" else psycopg.OperationalError)("locked")

    monkeypatch.setattr(store, "reject", locked)
    acks = Acks()
    with pytest.raises(RetryLater):
        _deliver(rx, "emotion-agent/lobby-1/stats", b"x", acks)
    assert acks.count == 0


def test_nats_inbox_terminates_a_poison_message_and_retries_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On JetStream: a message the handler keeps failing on is terminated, once, on the first
    delivery JetStream numbers MAX_DELIVERIES, and never delivered again; one held back by
    RetryLater is delivered again past that, until handled.

    The inbox goes by JetStream's delivery count, and nats-server 2.9 (Debian 12) sometimes
    counts a redelivery it never sends: a pull request that expired in the queue is picked, the
    message's count raised, and the message left for the next ``ack_wait`` (fixed upstream in
    2.10, nats-io/nats-server#5305 and #5338). In this test's 1 s rhythm 4 runs in 50 saw
    counts such as 1, 2, 4, 5 (4 handler calls, not 5), so the test asserts the counts the
    handler saw and the inbox's decision on them, not how many deliveries the server sent."""
    import nats  # noqa: PLC0415
    from nats.aio.msg import Msg  # noqa: PLC0415

    from agent.fleet import nats_inbox  # noqa: PLC0415

    node = NatsNode(tmp_path, "solo", 0, []).start()
    seen: collections.Counter[str] = collections.Counter()
    acked: list[str] = []
    counts: list[int] = []  # JetStream's delivery count of each failed poison delivery
    terms: list[int] = []  # and of each one the inbox terminated
    real_count, real_term = nats_inbox._deliveries, Msg.term

    def count(msg: Msg) -> int:
        n = real_count(msg)
        counts.append(n)
        return n

    async def term(msg: Msg) -> None:
        terms.append(msg.metadata.num_delivered)
        await real_term(msg)

    monkeypatch.setattr(nats_inbox, "_deliveries", count)
    monkeypatch.setattr(Msg, "term", term)

    def handler(d: Delivery) -> None:
        seen[d.topic] += 1
        if d.topic.endswith("/stats"):
            raise ValueError("poison")
        if seen[d.topic] <= MAX_DELIVERIES + 2:
            raise RetryLater("database away")
        acked.append(d.topic)
        d.ack()

    async def publish() -> None:
        nc = await nats.connect(node.url)
        try:
            js = nc.jetstream()
            await js.publish("emotion-agent.lobby-1.stats", b"x")
            await js.publish("emotion-agent.lobby-1.health", b"y")
        finally:
            await nc.close()

    source = NatsSourceSettings.model_validate(
        {"kind": "nats", "servers": [node.url], "replicas": 1, "ack_wait_seconds": 1}
    )
    inbox = NatsInbox(source, "rx-test")
    try:
        inbox.start(handler)
        assert inbox.ready.wait(15)
        asyncio.run(publish())
        deadline = time.monotonic() + 40
        while not acked and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # a poison message not terminated would be delivered again meanwhile
    finally:
        inbox.stop()
        node.stop()
    assert acked == ["emotion-agent/lobby-1/health"]
    assert seen["emotion-agent/lobby-1/health"] == MAX_DELIVERIES + 3
    assert len(counts) == seen["emotion-agent/lobby-1/stats"]  # every failure was counted
    assert counts[:1] == [1], counts
    assert counts == sorted(set(counts)), counts  # each delivery a new one
    assert counts[-1] >= MAX_DELIVERIES > max(counts[:-1], default=0), counts  # kept until the limit
    assert terms == [counts[-1]]  # terminated there, once: no delivery after it


def test_a_checkpoint_size_above_the_signed_64_bit_range_is_a_bad_note(
    store: Store, tmp_path: Path
) -> None:
    key, signer, keys = _device(tmp_path)
    rx, sent = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    topic = "emotion-agent/lobby-1/audit/checkpoint"
    for size in (2**63 - 1, 2**63):
        note = sign_checkpoint("emotion-agent/lobby-1", size, b"\x01" * 32, key).note
        _deliver(rx, topic, encode(signer.sign("audit-checkpoint", topic, {"note": note.decode()})), Acks())
    assert store.query("SELECT size FROM witness") == [(2**63 - 1,)]
    assert [r[0] for r in store.query("SELECT kind FROM witness_events")] == ["bad_note"]
    assert store.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
    assert any(t.endswith("/alert") for t, _ in sent)


def test_rejections_are_counted_per_registered_device_and_the_rest_as_unknown(
    store: Store, tmp_path: Path
) -> None:
    _, _, keys = _device(tmp_path)
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    acks = Acks()
    for device in ("lobby-1", "lobby-2", "Lobby-1", "-x", "a" * 64):
        _deliver(rx, f"emotion-agent/{device}/stats", b"x", acks)
    _deliver(rx, "emotion-agent/made-up/status", b"", acks)
    assert dict(rx.metrics.rejected) == {"lobby-1": 1, "unknown": 4}
    assert dict(rx.metrics.skipped) == {"unknown": 1}
    assert acks.count == 6


def test_the_fleet_device_id_pattern_is_the_agents() -> None:
    from agent import config  # noqa: PLC0415

    assert DEVICE_ID == config._DEVICE_ID


def test_a_payload_of_the_largest_size_is_checked_as_usual(store: Store, tmp_path: Path) -> None:
    _, signer, keys = _device(tmp_path)
    rx, _ = _receiver(store, tmp_path)
    rx.registry.provision(keys, NOW)
    topic = "emotion-agent/lobby-1/stats"
    small = encode(signer.sign("stats", topic, {"window_start": 0, "window_end": 60, "people": None,
                                                 "votes": None, "pad": ""}))
    fill = MAX_LINE_BYTES - len(small)
    body = {"window_start": 0, "window_end": 60, "people": None, "votes": None, "pad": "x" * fill}
    payload = encode(signer.sign("stats", topic, body))
    assert len(payload) == MAX_LINE_BYTES
    _deliver(rx, topic, payload, Acks())
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 1
    _deliver(rx, topic, payload + b" ", Acks())  # one byte more: refused before parsing
    assert store.query("SELECT reason FROM rejections") == [
        (f"payload is {MAX_LINE_BYTES + 1} bytes; at most {MAX_LINE_BYTES} are taken",)
    ]


def _junk(store: Store, i: int, device: str | None) -> None:
    store.reject(payload_sha256=f"{i:064x}", topic=f"emotion-agent/{device}/stats", device=device,
                 reason=f"junk {i}", received_ms=NOW + i, receiver="rx-1")


def test_the_rejections_table_keeps_the_newest_rows_and_the_counts_per_device_stay_whole(
    store_url: str,
) -> None:
    """Every distinct junk message was a row for ever: anyone who can publish could fill the
    database's disk. Now the oldest rows beyond ``max_rejections`` go, and the page's count per
    device comes from totals that keep every rejection."""
    store = Store(store_url, max_rejections=5)
    try:
        store.add_key("k1", "lobby-1", "{}", "keys_dir", NOW)
        with store.transaction() as cur:  # a device that has published: a row on the page
            store.execute(cur, "INSERT INTO devices VALUES (?, ?, ?)", ("lobby-1", NOW, "k1"))
        for i in range(12):
            _junk(store, i, "lobby-1")
        for i, name in enumerate(("made-up-1", "made-up-2", None), start=12):
            _junk(store, i, name)
        _junk(store, 14, None)  # a copy of a rejection still kept: not counted again
        assert store.query("SELECT reason FROM rejections ORDER BY n") == [
            (f"junk {i}",) for i in range(10, 15)
        ]
        assert store.rejected_per_device() == {"lobby-1": 12, "": 3}
        assert "<td>12</td><td><code>k1</code></td>" in render_page(store)
    finally:
        store.close()


def test_rejections_of_an_older_receiver_are_numbered_in_arrival_order_and_counted(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows stored before the cap get their running number by arrival, and the totals count
    them; the oldest go first once a rejection comes beyond the cap."""
    import agent.fleet.store as store_mod  # noqa: PLC0415

    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:2])
    old = Store(store_url)
    old.add_key("k1", "lobby-1", "{}", "keys_dir", NOW)
    for i, name in ((3, "lobby-1"), (1, "lobby-1"), (2, "made-up"), (0, None)):  # arrival: 0, 1, 2, 3
        with old.transaction() as cur:
            old.execute(cur, "INSERT INTO rejections (payload_sha256, topic, device, reason, received_ms, "
                        "receiver) VALUES (?, ?, ?, ?, ?, ?)", (f"{i:064x}", "t", name, f"junk {i}", NOW + i,
                                                                "rx"))
    old.close()
    monkeypatch.undo()
    store = Store(store_url, max_rejections=3)
    try:
        assert store.query("SELECT reason, n FROM rejections ORDER BY n") == [
            (f"junk {i}", i + 1) for i in range(4)
        ]
        assert store.rejected_per_device() == {"lobby-1": 2, "": 2}
        _junk(store, 4, "lobby-1")
        assert [r[0] for r in store.query("SELECT reason FROM rejections ORDER BY n")] == [
            "junk 2", "junk 3", "junk 4"
        ]
        assert store.rejected_per_device() == {"lobby-1": 3, "": 2}
    finally:
        store.close()


@pytest.mark.parametrize("name", ["lobby-1.pub", "Lobby-2", "lobby 3", "lobby_4", "\u00fcn\u00efcode"])
def test_a_key_file_not_named_for_a_device_is_refused_before_it_is_bound(tmp_path: Path, name: str) -> None:
    """keygen's ``device.pub.jwk`` copied as ``lobby-1.pub.jwk`` was bound in the shared
    database to a device 'lobby-1.pub' for good: every message of lobby-1 was then rejected,
    and renaming the file stopped `collect` ("already belongs to 'lobby-1.pub'") until the
    database was edited by hand (found by a hostile-input probe)."""
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    rx, _ = _receiver(store, tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{name}.jwk").write_text(json.dumps(public_jwk(Ed25519PrivateKey.generate().public_key())))
    with pytest.raises(KeyFileError, match=r"the name must be <device id>\.jwk"):
        rx.registry.provision(keys, NOW)
    assert store.query("SELECT device FROM device_keys") == []
