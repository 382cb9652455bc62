"""NATS JetStream inbox: devices publish over the server's MQTT listener, unchanged; receivers
read a replicated stream of the device subjects through one durable pull consumer.

Every replica pulls from the same durable consumer, so each message goes to one replica; one
not acknowledged within ``ack_wait_seconds`` (its replica died) is delivered again, and a
stream with ``replicas: 3`` survives the loss of one server. NATS maps MQTT topic levels to
subject tokens (``emotion-agent/lobby-1/stats`` arrives as ``emotion-agent.lobby-1.stats``).
Messages the receiver sends back (cosignatures) are plain NATS publishes: MQTT clients
subscribed at that moment get them, but NATS does not retain them for later subscribers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

from agent.fleet.inbox import (
    DEVICE_PREFIX,
    RETAINED_TOPICS,
    SHARED_TOPICS,
    Delivery,
    Handler,
    mqtt_to_subject,
    subject_to_mqtt,
)
from agent.fleet.settings import NatsSourceSettings

logger = logging.getLogger(__name__)

FETCH_BATCH = 64


def stream_subjects() -> list[str]:
    return [mqtt_to_subject(f"{DEVICE_PREFIX}/*/{t}") for t in (*SHARED_TOPICS, *RETAINED_TOPICS)]


class NatsInbox:
    def __init__(self, settings: NatsSourceSettings, client_name: str) -> None:
        self.settings = settings
        self.client_name = client_name
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def start(self, handler: Handler) -> None:
        self._thread = threading.Thread(target=self._run, args=(handler,), name="fleet-nats", daemon=True)
        self._thread.start()

    def _run(self, handler: Handler) -> None:
        try:
            asyncio.run(self._main(handler))
        except BaseException as exc:  # reported to the command, which exits non-zero
            self.error = exc
            logger.exception("NATS inbox stopped")
            self.ready.set()

    async def _main(self, handler: Handler) -> None:
        import nats  # noqa: PLC0415 - only receivers on NATS need it
        from nats.js.api import ConsumerConfig, StreamConfig  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        s = self.settings
        nc = await nats.connect(
            servers=s.servers, name=self.client_name, max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        js = nc.jetstream()
        try:
            await js.stream_info(s.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(name=s.stream, subjects=stream_subjects(), num_replicas=s.replicas)
            )
        sub = await js.pull_subscribe(
            "",
            durable=s.durable,
            stream=s.stream,
            config=ConsumerConfig(ack_wait=float(s.ack_wait_seconds), max_ack_pending=10_000),
        )
        self.ready.set()
        try:
            while not self._stop.is_set():
                await self._flush(nc)
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=0.5)
                except TimeoutError:
                    continue
                except Exception:  # a server node went away mid-fetch: the client reconnects
                    logger.warning("NATS fetch failed; retrying", exc_info=True)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._deliver(handler, msg)
            await self._flush(nc)
        finally:
            await nc.drain()

    async def _deliver(self, handler: Handler, msg: Any) -> None:
        acked: list[bool] = []
        delivery = Delivery(
            subject_to_mqtt(msg.subject), bytes(msg.data), int(time.time() * 1000), lambda: acked.append(True)
        )
        try:
            handler(delivery)
        except Exception:  # left unacknowledged: JetStream delivers it again after ack_wait
            logger.exception("receiver failed on a message", extra={"subject": msg.subject})
            return
        if acked:
            await msg.ack()

    async def _flush(self, nc: Any) -> None:
        while self._outbox:
            topic, payload = self._outbox.popleft()
            await nc.publish(mqtt_to_subject(topic), payload)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self._outbox.append((topic, payload))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
