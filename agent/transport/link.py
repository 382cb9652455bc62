"""The connection's parts that are not the output itself: states, health figures, and the hints
that explain a failed connection (paho's client is ``agent.mqtt_client``, the TLS context
``agent.broker_files``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class LinkState(StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    REFUSED = "refused"  # the broker answered CONNACK with a failure (password, ACL, protocol)
    FAILED = "failed"  # no CONNACK: network, TLS handshake, certificate
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class TransportHealth:
    """Figures for the health message; strings and integers only."""

    state: str
    protocol: str
    last_error: str | None
    backlog: int
    spool_bytes: int
    oldest_unsent_ms: int | None
    dropped: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    failures: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    takeovers: int = 0

    def to_body(self) -> dict[str, int | str | None]:
        """Fields to merge into the signed ``health`` body (integers and strings only)."""
        return {
            "mqtt": self.state,
            "mqtt_error": self.last_error,
            "spool_backlog": self.backlog,
            "spool_bytes": self.spool_bytes,
            "spool_oldest_ms": self.oldest_unsent_ms,
            "spool_dropped": sum(self.dropped.values()),
            "mqtt_connects": self.connects,
            "mqtt_failures": self.failures,
            "commands_rejected": self.commands_rejected,
            "mqtt_takeovers": self.takeovers,
        }


class OutgoingMessage(Protocol):
    """What :meth:`MqttOutput.send` needs (``agent.outputs.base.Message`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def retain(self) -> bool: ...


_HINTS = (
    ("CERTIFICATE_VERIFY_FAILED",
     "the broker's certificate is not signed by mqtt.tls.ca, has expired, or does not name mqtt.host"),
    ("ALERT_CERTIFICATE_EXPIRED", "the broker refused our client certificate mqtt.tls.cert: it has expired"),
    ("ALERT_UNKNOWN_CA",
     "the broker refused our client certificate mqtt.tls.cert: it is not signed by a CA the broker trusts"),
    ("ALERT_CERTIFICATE_REQUIRED", "the broker requires a client certificate: set mqtt.tls.cert and key"),
    ("ALERT_HANDSHAKE_FAILURE", "the broker refused the TLS handshake: does it require mqtt.tls.cert?"),
    ("ALERT_BAD_CERTIFICATE", "the broker refused our client certificate mqtt.tls.cert"),
    ("Not authorized", "check mqtt.username, mqtt.password_file and the broker's ACL"),
    ("Bad user name or password", "check mqtt.username and mqtt.password_file"),
    ("ConnectionRefusedError", "nothing listens there: check mqtt.host, mqtt.port and the broker"),
    ("Unsupported protocol version", "set mqtt.protocol to auto or 3.1.1"),
)


def telling(previous: str | None, error: str) -> str:
    """The error to keep in health after a failed attempt.

    A TLS peer that refuses our certificate sends an alert and closes; whether we read the
    alert or only the close (EOF) is a race. A bare EOF after a diagnosed failure is the same
    refusal with its reason lost, so the diagnosis stays.
    """
    if previous is not None and "EOF occurred" in error and _hint(error) is None and _hint(previous):
        return previous
    return error


def _hint(error: str) -> str | None:
    return next((hint for marker, hint in _HINTS if marker in error), None)


def explain(error: str) -> str:
    """The error followed by what to check, for the log and the health message."""
    hint = _hint(error)
    return error if hint is None else f"{error} ({hint})"
