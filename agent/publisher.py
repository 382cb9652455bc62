"""Sign once, send the same bytes everywhere, and record every publish in the audit log.

The service hands plain integer bodies to ``Publisher.publish``; the Signer wraps them in the
signed envelope (docs/signed-messages.md), every output receives identical bytes, and the audit
log gets ``publish`` (topic, seq, sha256 of the payload) so an auditor can match each message
seen on the broker to the log.

``publish`` is recorded only once every output took the message (the MQTT output takes it
when it is durably in the spool). An output that cannot take it (a full disk) leaves the
message waiting in memory, signed once, so it keeps its sequence number; waiting messages go
out in order on the next ``publish`` or ``retry`` (the service calls it every loop turn).
At most ``HELD_MAX`` wait; beyond that the oldest is dropped and counted. A message that
cannot even be signed (the signer's state file cannot be written) waits unsigned. At stop
(``close``) the waiting messages get one last try; those still refused are lost with the
process, and the log and the audit log (``publish_lost``) say how many.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.crypto import JSON, MessageSigner, encode
from agent.outputs.base import Message, Output

logger = logging.getLogger(__name__)

HELD_MAX = 1000
"""Messages kept in memory while an output refuses them (about 1 KB each)."""
CLOSE_WAIT_S = 2.0
"""How long ``close`` waits for another thread's turn: a turn writes to the spool on the local
disk and never waits for the broker."""


class AuditSink(Protocol):
    def append(self, kind: str, fields: Mapping[str, JSON]) -> int: ...


@dataclass
class _Waiting:
    """A message not yet taken by every output."""

    suffix: str
    body: Mapping[str, JSON]
    retain: bool
    message: Message | None = None
    seq: int = 0
    outputs: list[Output] = field(default_factory=list)
    typ: str | None = None
    waited: bool = False


class Publisher:
    """Topics are relative to ``base_topic`` (default ``emotion-agent/<device_id>``)."""

    def __init__(
        self,
        signer: MessageSigner,
        outputs: Sequence[Output],
        base_topic: str,
        audit: AuditSink | None = None,
    ) -> None:
        self.signer = signer
        self.outputs = list(outputs)
        self.base_topic = base_topic.rstrip("/")
        self.audit = audit
        self.sent = 0
        self.dropped = 0
        self.error: str | None = None
        self._waiting: deque[_Waiting] = deque()
        self._turn = threading.Lock()
        """Held while a turn of ``retry`` hands messages on (``retry``)."""

    @property
    def held(self) -> int:
        """Messages waiting in memory for an output (or the signer) to accept them."""
        return len(self._waiting)

    def topic(self, suffix: str) -> str:
        return f"{self.base_topic}/{suffix}"

    def publish(
        self, suffix: str, body: Mapping[str, JSON], *, retain: bool = False, typ: str | None = None
    ) -> Message | None:
        """Sign ``body`` for ``<base>/<suffix>`` and hand it to every output; the message, or
        None while it waits (behind earlier waiting ones, or refused by an output). ``typ``
        defaults to the suffix (``audit/checkpoint`` is ``audit-checkpoint``)."""
        item = _Waiting(suffix, body, retain, outputs=list(self.outputs), typ=typ)
        self._waiting.append(item)
        self.retry()
        return item.message if item.message is not None and not item.outputs else None

    def retry(self) -> None:
        """Hand waiting messages on, oldest first; stop at the first one still refused.

        One turn at a time: an output's send can publish in turn (a full spool drops a row, the
        audit entry for it makes a checkpoint due, the checkpoint is published), from this
        thread or the spool's sender thread. Such a message only joins the queue, and the turn
        that is running hands it on after the one being sent. Nested, the inner turn sent the
        outer message a second time and the outer one then failed on an empty queue (found by
        review)."""
        self._turns(self._turn.acquire(blocking=False))

    def _turns(self, acquired: bool) -> None:
        """Hand on while the turn is this thread's (``acquired``: it is now). A message another
        thread queued after the turn's last look at the queue, but before the turn was let go,
        found the turn taken: it is taken here, with one more turn (else it waited for the next
        publish, and at stop was counted lost)."""
        while acquired:  # False: a turn is running (further up this thread, or in another): it takes them
            try:
                stalled = self._hand_on()
            finally:
                self._turn.release()
            if stalled or not self._waiting:
                return
            acquired = self._turn.acquire(blocking=False)

    def _hand_on(self) -> bool:
        """One turn: the waiting messages, oldest first; True when one was refused (the rest wait)."""
        if len(self._waiting) > HELD_MAX:
            self._drop_oldest(len(self._waiting) - HELD_MAX)
        while self._waiting:
            item = self._waiting[0]
            if not self._deliver(item):
                for later in self._waiting:
                    later.waited = True
                return True
            self._waiting.popleft()
            if self.error is not None:
                self._recovered(1 + sum(1 for w in self._waiting if w.waited))
            self._record(item)
        return False

    def _drop_oldest(self, n: int) -> None:
        for _ in range(n):
            lost = self._waiting.popleft()
            self.dropped += 1
            logger.error("publisher: %d message(s) dropped while outputs refused them (%s)",
                         self.dropped, lost.suffix)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> int:
        """The service is stopping: one last try, then the messages still waiting are lost with
        the process (memory only), which an error log line and a ``publish_lost`` audit entry
        say, with how many and why. Returns that number. A turn another thread is running (the
        spool's sender thread publishing a checkpoint) is waited for, up to ``wait_s``: it
        takes what is queued behind it, which would otherwise be counted lost and then sent."""
        self._turns(self._turn.acquire(timeout=wait_s))
        lost = len(self._waiting)
        if lost:
            dropped = f" ({self.dropped} more dropped earlier)" if self.dropped else ""
            message = (
                f"{lost} message(s) waiting in memory are lost at stop{dropped}: an output "
                f"refused them: {self.error}"
            )
            logger.error("publisher: %s", message)
            if self.audit is not None:
                self.audit.append("error", {"code": "publish_lost", "message": message[:500]})
        return lost

    def _recovered(self, waited: int) -> None:
        """Outputs accept messages again: say in the audit log how many waited and why."""
        delayed = waited + self.dropped
        message = (
            f"{delayed} message(s) waited in memory ({self.dropped} dropped) because an output "
            f"refused them: {self.error}"
        )
        logger.warning("publisher: outputs accept messages again; %s", message)
        if self.audit is not None:
            self.audit.append("error", {"code": "publish_delayed", "message": message[:500]})
        self.error, self.dropped = None, 0

    def _deliver(self, item: _Waiting) -> bool:
        if item.message is None:
            topic = self.topic(item.suffix)
            typ = item.typ or item.suffix.replace("/", "-").replace("_", "-")  # a-z, 0-9 and dashes
            try:
                envelope = self.signer.sign(typ, topic, item.body)
            except OSError as exc:  # the sequence reservation could not be written
                self._refused(f"cannot sign: {exc.strerror or exc}")
                return False
            item.message = Message(topic=topic, payload=encode(envelope), retain=item.retain)
            item.seq = int(envelope["seq"])
        refused = []
        for output in item.outputs:
            try:
                output.send(item.message)
            except Exception as exc:  # one broken output must not silence the others
                refused.append(output)
                self._refused(f"{type(output).__name__}: {exc}")
        item.outputs = refused
        return not refused

    def _refused(self, error: str) -> None:
        if error != self.error:
            logger.error("publisher: %s; the message waits in memory", error)
        self.error = error

    def _record(self, item: _Waiting) -> None:
        assert item.message is not None  # noqa: S101 - delivered messages are signed
        if self.audit is not None:
            self.audit.append(
                "publish",
                {
                    "topic": item.message.topic,
                    "seq": item.seq,
                    "payload_sha256": hashlib.sha256(item.message.payload).hexdigest(),
                },
            )
        self.sent += 1
