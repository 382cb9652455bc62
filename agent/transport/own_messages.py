"""The link's own messages (status, clears, discovery) until their PUBACK.

They are not spooled, so paho holds the only copy: a reconnect takes every unacknowledged
message back from paho (:meth:`~agent.transport.sender.SpoolSender.reconnected`), and those of
the link are published again from here, in their order. The first connect's clears and
retractions are sent by no later connect: dropped, they would be lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.mqtt_client import paho

logger = logging.getLogger(__name__)


class OwnMessages:
    """Publishes the link's own messages and remembers each until its PUBACK."""

    def __init__(self) -> None:
        self._publishing = threading.Lock()  # a publish and its entry, or a connect taking back
        self._lock = threading.Lock()  # the map only; never held while calling paho
        self._own: dict[int, paho.MQTTMessageInfo] = {}

    def publish(
        self, client: paho.Client, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True
    ) -> paho.MQTTMessageInfo:
        """Publish one of the link's own messages (not spooled), remembered until its PUBACK."""
        with self._publishing:
            info = client.publish(topic, payload, qos=qos, retain=retain)
            with self._lock:
                self._own[info.mid] = info
        return info

    def take_back(
        self, client: paho.Client, reconnected: Callable[[paho.Client], list[paho.MQTTMessage]]
    ) -> None:
        """At a connect, before anything else is published: ``reconnected`` takes the last
        connection's unacknowledged messages back from paho (the sender sends its rows again, in
        spool order), and the link's own among them are published again, in their order."""
        with self._publishing:
            dropped = reconnected(client)
            with self._lock:
                # The same message, not only the same id: ids are reused once acknowledged.
                own = [m for m in dropped if self._own.get(m.mid) is m.info]
                self._own.clear()  # nothing else of ours is still with paho
        for m in own:
            self.publish(client, m.topic, bytes(m.payload), qos=m.qos, retain=m.retain)

    def say_offline(self, client: paho.Client, status_topic: str, deadline: float) -> None:
        """Publish ``offline`` and wait for its PUBACK until ``deadline`` (``time.monotonic``):
        acknowledged in order, it says that all queued before it reached the broker."""
        info = self.publish(client, status_topic, b"offline")
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as exc:
            logger.warning("could not confirm the offline status: %s", exc)
        else:
            if not info.is_published():
                logger.warning(
                    "the broker did not acknowledge the offline status in time; messages queued "
                    "before it may not have reached it"
                )

    def acked(self, mid: int) -> None:
        """paho's ``on_publish``: the message is the broker's now (a spooled row's id is ignored)."""
        with self._lock:
            self._own.pop(mid, None)
