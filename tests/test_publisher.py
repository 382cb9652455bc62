"""The publisher records ``publish`` only for messages every output took; refused ones wait in
memory, keep their sequence number and go out in order later (issue 18 item 1)."""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock
from agent.crypto import JSON, MemorySequenceStore, Signer
from agent.outputs.base import Message
from agent.publisher import HELD_MAX, Publisher


class Disk:
    """An output on a disk that can be full."""

    def __init__(self) -> None:
        self.full = False
        self.lines: list[Message] = []

    def start(self) -> None:
        pass

    def send(self, message: Message) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(message)

    def stop(self) -> None:
        pass


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def append(self, kind: str, fields: Mapping[str, JSON]) -> int:
        self.entries.append((kind, dict(fields)))
        return len(self.entries) - 1


def make(*outputs: Disk) -> tuple[Publisher, Audit]:
    signer = Signer("lobby-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore(), clock=FakeClock())
    audit = Audit()
    return Publisher(signer, list(outputs), "emotion-agent/lobby-1", audit), audit


def published(audit: Audit) -> list[int]:
    return [fields["seq"] for kind, fields in audit.entries if kind == "publish"]


def seqs(disk: Disk) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in disk.lines]


def test_a_refused_message_is_not_recorded_as_published_and_goes_out_later_with_its_seq(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk()
    publisher, audit = make(disk)
    publisher.publish("stats", {"window": 1})
    disk.full = True
    with caplog.at_level(logging.ERROR):
        assert publisher.publish("stats", {"window": 2}) is None
        publisher.publish("stats", {"window": 3})
        publisher.retry()
    assert published(audit) == [1]  # 2 and 3 are not "published"
    assert publisher.held == 2
    assert publisher.error is not None
    assert "No space left on device" in publisher.error
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # said once
    assert all(r.exc_info is None for r in caplog.records)
    disk.full = False
    publisher.publish("stats", {"window": 4})
    assert seqs(disk) == [1, 2, 3, 4]  # in order, each signed once
    assert [json.loads(m.payload)["body"]["window"] for m in disk.lines] == [1, 2, 3, 4]
    assert published(audit) == [1, 2, 3, 4]
    kinds = [(kind, fields.get("code")) for kind, fields in audit.entries]
    assert kinds[1] == ("error", "publish_delayed")  # said once there is space, before the rest
    assert "2 message(s) waited in memory (0 dropped)" in audit.entries[1][1]["message"]
    assert "No space left on device" in audit.entries[1][1]["message"]
    assert publisher.held == 0
    assert publisher.error is None


def test_an_output_that_took_a_message_does_not_get_it_twice() -> None:
    jsonl, spool = Disk(), Disk()
    publisher, audit = make(jsonl, spool)
    spool.full = True
    publisher.publish("stats", {"window": 1})
    publisher.retry()
    assert seqs(jsonl) == [1]
    assert audit.entries == []
    spool.full = False
    publisher.retry()
    assert seqs(jsonl) == [1]
    assert seqs(spool) == [1]
    assert published(audit) == [1]


def test_a_message_that_cannot_be_signed_waits_unsigned() -> None:
    class FailingSigner:
        def __init__(self) -> None:
            self.fail = True
            self.inner = Signer("lobby-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore(),
                                clock=FakeClock())

        def sign(self, typ: str, topic: str, body: Mapping[str, JSON]) -> dict[str, Any]:
            if self.fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.inner.sign(typ, topic, body)

    signer, disk, audit = FailingSigner(), Disk(), Audit()
    publisher = Publisher(signer, [disk], "emotion-agent/lobby-1", audit)
    publisher.publish("stats", {"window": 1})
    assert publisher.held == 1
    assert publisher.error == "cannot sign: No space left on device"
    signer.fail = False
    publisher.retry()
    assert seqs(disk) == [1]
    assert published(audit) == [1]


def test_memory_is_bounded_the_oldest_waiting_message_is_dropped_and_counted() -> None:
    disk = Disk()
    disk.full = True
    publisher, _ = make(disk)
    for i in range(HELD_MAX + 5):
        publisher.publish("stats", {"window": i})
    assert publisher.held == HELD_MAX
    assert publisher.dropped == 5


def test_close_tries_once_more_and_logs_and_audits_the_messages_it_still_cannot_deliver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk()
    disk.full = True
    publisher, audit = make(disk)
    for i in range(3):
        publisher.publish("stats", {"window": i})
    with caplog.at_level(logging.ERROR):
        assert publisher.close() == 3
    said = [r.getMessage() for r in caplog.records if "lost at stop" in r.getMessage()]
    assert len(said) == 1
    assert "3 message(s)" in said[0]
    assert "No space left on device" in said[0]
    lost = [fields for kind, fields in audit.entries if kind == "error" and fields["code"] == "publish_lost"]
    assert len(lost) == 1
    assert lost[0]["message"].startswith("3 message(s) waiting in memory are lost at stop")
    assert published(audit) == []


def test_close_delivers_what_an_output_takes_again_and_reports_no_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk()
    disk.full = True
    publisher, audit = make(disk)
    publisher.publish("stats", {"window": 1})
    disk.full = False  # space came back since the last loop turn
    with caplog.at_level(logging.ERROR):
        assert publisher.close() == 0
    assert seqs(disk) == [1]
    assert published(audit) == [1]
    assert not any(fields.get("code") == "publish_lost" for _, fields in audit.entries)
    assert not any("lost" in r.getMessage() for r in caplog.records)


class SlowDisk(Disk):
    """An output whose first send waits until another thread has published meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.go_on = threading.Event()

    def send(self, message: Message) -> None:
        if not self.lines:
            self.sending.set()
            self.go_on.wait(5)
        super().send(message)


def one_sending_one_queued() -> tuple[SlowDisk, Publisher, Audit, threading.Thread]:
    """Message 1 in a send on a thread of its own (returned), held until ``disk.go_on``; message 2
    published meanwhile and queued behind it."""
    disk = SlowDisk()
    publisher, audit = make(disk)
    sender = threading.Thread(target=publisher.publish, args=("stats", {"n": 1}))
    sender.start()
    assert disk.sending.wait(5)
    assert publisher.publish("audit/checkpoint", {"n": 2}) is None  # queued behind the send
    return disk, publisher, audit, sender


def test_a_publish_from_another_thread_during_a_send_waits_its_turn() -> None:
    """The spool's sender thread can publish (a drop's audit entry makes a checkpoint due) while
    the loop's publish is sending: that message joins the queue and the running turn hands it
    on, once, after the one being sent."""
    disk, _, audit, loop = one_sending_one_queued()
    disk.go_on.set()
    loop.join(5)
    assert seqs(disk) == published(audit) == [1, 2]


def test_close_waits_for_a_turn_another_thread_is_running_and_reports_no_false_loss() -> None:
    """The stop's checkpoint, published while the spool's sender thread was in a turn, was
    counted lost by ``close`` (an error line and a ``publish_lost`` audit entry) and then sent by
    that turn: the audit log said lost what the broker got."""
    disk, publisher, audit, sender = one_sending_one_queued()
    threading.Timer(0.2, disk.go_on.set).start()
    assert publisher.close() == 0
    sender.join(5)
    assert seqs(disk) == published(audit) == [1, 2]
    assert [f for kind, f in audit.entries if kind == "error"] == []


class _ReleaseHook:
    """The turn's lock, running ``before_release`` once just before it is first released."""

    def __init__(self, before_release: Any) -> None:
        self._lock = threading.Lock()
        self._before = before_release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        hook, self._before = self._before, None
        if hook is not None:
            hook()
        self._lock.release()


def test_a_message_queued_as_a_turn_ends_is_not_stranded() -> None:
    """Another thread's publish that came after the running turn's last look at the queue, but
    before it let go of the turn, found the turn taken and returned: the message waited, signed
    by nobody, until some later publish (at stop: counted lost)."""
    disk = Disk()
    publisher, audit = make(disk)

    def other_thread_publishes() -> None:
        t = threading.Thread(target=publisher.publish, args=("audit/checkpoint", {"n": 2}))
        t.start()
        t.join(5)

    publisher._turn = _ReleaseHook(other_thread_publishes)  # type: ignore[assignment]
    publisher.publish("stats", {"n": 1})
    assert publisher.held == 0
    assert seqs(disk) == published(audit) == [1, 2]
