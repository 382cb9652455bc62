"""Where a receiver's messages come from, behind one small interface (MQTT 5 or NATS JetStream).

A ``Delivery`` is acknowledged only after the receiver has committed what it means (stored,
rejected or skipped): a replica that dies before that leaves the message to be delivered
again, and the database key makes the second delivery a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

DEVICE_PREFIX = "emotion-agent"
SHARED_TOPICS = ("stats", "alert", "health", "privacy_mode", "privacy")
"""Per-window traffic, split among replicas (MQTT ``$share``)."""
RETAINED_TOPICS = ("key", "key-rotation", "audit/checkpoint", "alert/+")
"""Retained device topics: brokers never send retained messages to shared subscriptions, so
every replica subscribes to these plainly; duplicates are caught by the store.

Together the two lists are every signed topic the agent publishes (``alert/+`` is the retained
``alert/<rule>`` state): each message takes a sequence number, so one missed here is stored
nowhere and shows as a false gap (a test compares them with the agent's ``publish`` calls)."""


@dataclass(frozen=True)
class Delivery:
    topic: str
    payload: bytes
    received_ms: int
    ack: Callable[[], None]


Handler = Callable[[Delivery], None]
"""Handles one delivery and acknowledges it. Raises ``RetryLater`` when the database is away
(the message must be delivered again, however often); any other exception is a failure on
this message, which an inbox delivers again at most ``MAX_DELIVERIES`` times in all."""

MAX_DELIVERIES = 5
"""Deliveries of a message whose handling keeps failing (not a database outage) before the
inbox gives up on it (NATS: ``term``), so that one poison message cannot be redelivered for ever."""


class RetryLater(Exception):
    """The message could not be handled because the database is unreachable: deliver it again,
    never give up on it (the receiver exits when the outage lasts)."""


class Inbox(Protocol):
    error: BaseException | None
    """Set when the inbox stopped for good (it retries what it can): the receiver then exits
    non-zero instead of running on without messages."""

    def start(self, handler: Handler) -> None:
        """Begin delivering messages to ``handler`` (from the inbox's own thread)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Send a receiver message (cosignature, rollup, alert) back to the devices' side."""

    def stop(self) -> None: ...


def mqtt_to_subject(topic: str) -> str:
    """NATS' MQTT listener maps topic levels to subject tokens (``a/b`` -> ``a.b``)."""
    return topic.replace("/", ".")


def filter_to_subject(topic_filter: str) -> str:
    """An MQTT topic filter as a NATS subject: levels to tokens, ``+`` to ``*``, ``#`` to ``>``."""
    tokens = {"+": "*", "#": ">"}
    return ".".join(tokens.get(level, level) for level in topic_filter.split("/"))


def subject_to_mqtt(subject: str) -> str:
    return subject.replace(".", "/")
