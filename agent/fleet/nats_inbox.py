"""NATS JetStream inbox: devices publish over the server's MQTT listener, unchanged; receivers
read a replicated stream of the device subjects through one durable pull consumer.

Every replica pulls from the same durable consumer, so each message goes to one replica; one
not acknowledged within ``ack_wait_seconds`` (its replica died) is delivered again, and a
stream with ``replicas: 3`` survives the loss of one server. NATS maps MQTT topic levels to
subject tokens (``emotion-agent/lobby-1/stats`` arrives as ``emotion-agent.lobby-1.stats``).
Messages the receiver sends back (cosignatures) are plain NATS publishes: MQTT clients
subscribed at that moment get them, but NATS does not retain them for later subscribers.

A message the receiver fails on is recorded by the receiver as a rejection (``receiver
error: <type>``) and acknowledged; one it cannot even record is delivered again, and after
``MAX_DELIVERIES`` deliveries terminated (``term``: never delivered again). One held back by a
database outage (``RetryLater``) is left for redelivery however often that takes: the consumer
has no ``max_deliver``, which would count those deliveries too and drop messages the database
merely could not take yet.

A server node dying, or the stream's or the consumer's leader being elected anew, makes calls
time out for a few seconds: the inbox then closes its connection and connects, finds the
stream and subscribes again, waiting a little longer each time (``RETRY_SECONDS``), for as long
as it takes. It stops only when asked or when it cannot work at all (nats-py missing), and
then sets ``error``, which makes ``collect`` exit non-zero so that systemd restarts it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any

from agent.fleet.inbox import (
    DEVICE_PREFIX,
    MAX_DELIVERIES,
    RETAINED_TOPICS,
    SHARED_TOPICS,
    Delivery,
    Handler,
    RetryLater,
    filter_to_subject,
    mqtt_to_subject,
    subject_to_mqtt,
)
from agent.fleet.settings import NatsSourceSettings

logger = logging.getLogger(__name__)

FETCH_BATCH = 64
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Waits before connecting again after a failure, the last one repeated."""


def stream_subjects() -> list[str]:
    return [filter_to_subject(f"{DEVICE_PREFIX}/+/{t}") for t in (*SHARED_TOPICS, *RETAINED_TOPICS)]


async def ensure_stream(js: Any, name: str, replicas: int) -> None:
    """Create the stream, or add to an existing one (made by an older receiver, which knew
    fewer topics) the subjects it lacks: messages on a subject no stream holds are dropped by
    NATS and show only as sequence gaps. Subjects an operator added are kept."""
    from nats.js.api import StreamConfig  # noqa: PLC0415
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=name, subjects=stream_subjects(), num_replicas=replicas))
        return
    have = list(info.config.subjects or [])
    missing = [s for s in stream_subjects() if s not in have]
    if missing:
        logger.warning("stream %s: adding the subjects %s", name, ", ".join(missing))
        await js.update_stream(dataclasses.replace(info.config, subjects=have + missing))


def _deliveries(msg: Any) -> int:
    """How many times JetStream has delivered ``msg`` (this one included)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # no JetStream metadata: count it as the first
        return 1


class NatsInbox:
    def __init__(self, settings: NatsSourceSettings, client_name: str) -> None:
        self.settings = settings
        self.client_name = client_name
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        """Why the inbox stopped for good (then the receiver must exit), None while it runs."""
        self._delivered = False

    def start(self, handler: Handler) -> None:
        self._thread = threading.Thread(target=self._run, args=(handler,), name="fleet-nats", daemon=True)
        self._thread.start()

    def _run(self, handler: Handler) -> None:
        try:
            asyncio.run(self._main(handler))
        except BaseException as exc:  # nats-py missing: read by the service, which exits non-zero
            self.error = exc
            logger.exception("NATS inbox stopped")
            self.ready.set()

    async def _main(self, handler: Handler) -> None:
        import nats  # noqa: PLC0415, F401 - only receivers on NATS need it; missing is fatal

        failures = 0
        while not self._stop.is_set():
            try:
                await self._session(handler)
            except Exception:  # a node died, a leader is being elected: connect again
                wait = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "NATS inbox lost the stream; connecting again in %.1f s", wait, exc_info=True,
                    extra={"fields": {"attempt": failures}},
                )
                await self._sleep(wait)
            else:
                return
            if self._delivered:
                failures, self._delivered = 0, False

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when ``stop`` is called."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _session(self, handler: Handler) -> None:
        """One connection: find (or make) the stream, pull until stopped or until a call fails."""
        import nats  # noqa: PLC0415
        from nats.js.api import ConsumerConfig  # noqa: PLC0415

        s = self.settings
        nc = await nats.connect(
            servers=s.servers, name=self.client_name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            connect_timeout=2,
        )
        try:
            js = nc.jetstream()
            await ensure_stream(js, s.stream, s.replicas)
            sub = await js.pull_subscribe(
                "",
                durable=s.durable,
                stream=s.stream,
                config=ConsumerConfig(ack_wait=float(s.ack_wait_seconds), max_ack_pending=10_000),
            )
            self.ready.set()
            while not self._stop.is_set():
                await self._flush(nc)
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    await self._deliver(handler, msg)
                self._delivered = True
            await self._flush(nc)
        finally:
            with contextlib.suppress(Exception):  # never hides why the session ended
                await nc.close()

    async def _deliver(self, handler: Handler, msg: Any) -> None:
        acked: list[bool] = []
        delivery = Delivery(
            subject_to_mqtt(msg.subject), bytes(msg.data), int(time.time() * 1000), lambda: acked.append(True)
        )
        try:
            handler(delivery)
        except RetryLater:  # the database is away: unacknowledged, delivered again after ack_wait
            logger.warning("database unavailable; the message will be delivered again", exc_info=True,
                           extra={"subject": msg.subject})
            return
        except Exception:  # the receiver fails on this message (it could not even record it)
            delivered = _deliveries(msg)
            if delivered >= MAX_DELIVERIES:
                logger.exception(
                    "receiver failed on a message %d times; giving up on it", delivered,
                    extra={"subject": msg.subject},
                )
                await msg.term()  # never delivered again
            else:  # left unacknowledged: JetStream delivers it again after ack_wait
                logger.exception("receiver failed on a message", extra={"subject": msg.subject})
            return
        if acked:
            await msg.ack()

    async def _flush(self, nc: Any) -> None:
        while self._outbox:
            topic, payload = self._outbox[0]
            await nc.publish(mqtt_to_subject(topic), payload)
            self._outbox.popleft()  # only once handed to the client: a failed session sends it again

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self._outbox.append((topic, payload))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
