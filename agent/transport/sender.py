"""The sender thread: spooled rows go to paho in order and leave the spool on their PUBACK.

At most ``max_inflight`` rows are with paho at a time. A row is handed to paho once per
connection: paho would re-send what it holds after a reconnect only once ``on_connect`` has
returned, behind newer rows this thread may already have handed it (the receivers would reject
the older ones as out of order). So at each connect :meth:`SpoolSender.reconnected` takes the
unacknowledged messages back from paho and this thread sends again from the oldest
unacknowledged row, in spool order. ``on_publish`` runs under paho's message lock, so
:meth:`SpoolSender.acked` only queues the acknowledgement; this thread applies it (no lock-order
deadlock with ``publish``).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt_client import paho
from agent.transport.spool import Spool
from agent.transport.spool_types import SpoolItem

logger = logging.getLogger(__name__)

_RESUBMIT = -1
"""Queued with the acknowledgements by :meth:`SpoolSender.reconnected`; never a paho message id."""

RETENTION_EVERY_S = 60.0
"""Retention is also applied while nothing new is spooled (a long privacy pause, say)."""


class SpoolSender:
    """Owns the mapping from paho message ids to spool rows."""

    def __init__(
        self,
        spool: Spool,
        max_inflight: int,
        connected: threading.Event,
        client: Callable[[], paho.Client | None],
        *,
        each_round: Callable[[], None] = lambda: None,
        retention_every_s: float = RETENTION_EVERY_S,
        check: Callable[[SpoolItem], str | None] = lambda _item: None,
    ) -> None:
        self._spool = spool
        self._max_inflight = max_inflight
        self._connected = connected
        self._client = client
        self._each_round = each_round
        self._acks: queue.Queue[tuple[int, ReasonCode | None]] = queue.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._inflight: dict[int, int] = {}
        self._submitting = threading.Lock()  # a batch of publish calls, or a connect taking back
        self._last_submitted = 0
        self._retention_every_s = retention_every_s
        self._last_retention = time.monotonic()
        self._thread: threading.Thread | None = None
        self._outlived_stop = False
        self._check = check
        self._last_failure: str | None = None
        self._clears: list[tuple[int, tuple[str, ...]]] = []
        self._clears_inflight: dict[int, str] = {}
        """Clears handed to paho and not yet acknowledged (this thread only): a reconnect takes
        them back from paho with the rows, so they are queued again then."""
        self._clears_lock = threading.Lock()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._outlived_stop = self._thread.is_alive()
        self._thread = None

    def apply_late_acks(self) -> None:
        """After :meth:`stop` and paho's ``loop_stop`` (no PUBACK comes after that): delete the
        rows acknowledged since the thread ended (``stop`` waits for ``offline`` then), or the next
        start sends them again. Not while a thread that outlived ``stop`` may still use the spool."""
        if not self._outlived_stop:
            self._apply_last_acks()

    def _apply_last_acks(self) -> None:
        """The broker's last answers; a spool that cannot take them (a disk error, or closed at
        the end of a stop this thread outlived) keeps the rows, which go out again."""
        try:
            self._apply_acks()
        except sqlite3.Error as exc:
            logger.warning("MQTT sender: acknowledged rows stay spooled and go out again: %s", exc)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def clearing(self) -> bool:
        """Clears (``clear_after``) wait for their rows or for this thread's next round."""
        with self._clears_lock:
            return bool(self._clears)

    def wake(self) -> None:
        self._wake.set()

    def clear_after(self, row_id: int, topics: Sequence[str]) -> None:
        """Empty the retained messages on ``topics`` (on this thread, while connected) once every
        row up to ``row_id`` has gone to paho: a state spooled before cannot land after it and
        stay retained. Unsent at stop, they are not kept."""
        with self._clears_lock:
            self._clears.append((row_id, tuple(topics)))
        self._wake.set()

    def acked(self, mid: int, reason: ReasonCode | None) -> None:
        """paho's ``on_publish`` (network thread): queue only."""
        self._acks.put((mid, reason))
        self._wake.set()

    def reconnected(self, client: paho.Client) -> list[paho.MQTTMessage]:
        """paho's ``on_connect`` (network thread), before ``connected`` is set: take every
        unacknowledged message of the last connection back from paho, so that it does not re-send
        them behind what is handed to it from now on, and return them in their order (the caller
        publishes its own again). After the acknowledgements already queued, this thread then
        forgets its rows in flight and sends again from the oldest unacknowledged one."""
        with self._submitting:  # not in the middle of a batch: every row handed over is taken back
            dropped = client.drop_out_messages()
            self._acks.put((_RESUBMIT, None))
        self._wake.set()
        return dropped

    def forget_inflight(self) -> None:
        """A new paho client holds nothing: send again from the oldest unacknowledged row."""
        self._inflight.clear()
        self._last_submitted = 0

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._apply_acks()
                self._each_round()
                self._retention()
                self._submit()
            except Exception as exc:  # a full disk, a locked database: one line, said once
                failure = f"{exc.__class__.__name__}: {exc}"
                if failure != self._last_failure:
                    logger.error("MQTT sender: %s; it retries every 0.5 s", failure)  # noqa: TRY400 - one line, no traceback
                self._last_failure = failure
            else:
                self._last_failure = None
            self._wake.wait(0.5)
        # Not on the loop's terms: a thread that outlived ``stop`` may find the spool closed, and
        # died there with a traceback (found by review).
        self._apply_last_acks()

    def _retention(self) -> None:
        now = time.monotonic()
        if now - self._last_retention >= self._retention_every_s:
            self._last_retention = now
            self._spool.enforce_limits()

    def _apply_acks(self) -> None:
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            if mid == _RESUBMIT:
                self.forget_inflight()
                self._requeue_clears()
                continue
            if self._clears_inflight.pop(mid, None) is not None:
                continue  # a removed rule's clear reached the broker
            row = self._inflight.pop(mid, None)
            if row is None:
                continue  # status, discovery and other unspooled messages
            if reason is not None and reason.is_failure:
                logger.error("the broker refused a message: %s; dropping it from the spool", reason)
                self._spool.drop(row, "refused_by_broker")
            else:
                self._spool.ack(row)

    def _requeue_clears(self) -> None:
        """A reconnect took the unacknowledged clears back from paho: due again at once."""
        if self._clears_inflight:
            with self._clears_lock:
                self._clears.insert(0, (0, tuple(self._clears_inflight.values())))
            self._clears_inflight.clear()

    def _submit(self) -> None:
        with self._submitting:
            self._submit_batch()

    def _submit_batch(self) -> None:
        client = self._client()
        if client is None or not self._connected.is_set():
            return
        self._apply_acks()  # a connect's _RESUBMIT is queued before `connected` is set
        self._hand_over(client)
        self._clear_due(client)

    def _hand_over(self, client: paho.Client) -> None:
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return
        for item in self._spool.pending(after_id=self._last_submitted, limit=room):
            problem = self._check(item)
            if problem is None:
                try:
                    info = client.publish(item.topic, item.payload, qos=1, retain=item.retain)
                except (ValueError, TypeError) as exc:  # paho refuses the topic or payload
                    problem = f"paho refused it: {exc}"
            if problem is not None:
                self._spool.quarantine(item.id, problem)
                self._last_submitted = item.id
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                return
            self._inflight[info.mid] = item.id
            self._last_submitted = item.id

    def _clear_due(self, client: paho.Client) -> None:
        """The clears whose rows have all gone to paho (the next row not handed over is later)."""
        with self._clears_lock:
            waiting = list(self._clears)
        if not waiting:
            return
        following = self._spool.pending(after_id=self._last_submitted, limit=1)
        due = [c for c in waiting if not following or c[0] < following[0].id]
        for _row, topics in due:
            for topic in topics:
                info = client.publish(topic, b"", qos=1, retain=True)
                self._clears_inflight[info.mid] = topic
        with self._clears_lock:
            self._clears = [c for c in self._clears if c not in due]
