"""The connection's parts that are not the output itself: states, health figures, paho's client.

``PahoClient`` is paho's client remembering why the last socket could not be opened (paho's
retry loop swallows the error). ``tls_context`` builds the TLS context handed to paho through its
public ``tls_set_context``; its sockets close themselves when the handshake fails, which paho's
own wrapping leaves open (one ResourceWarning per retry).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from agent.transport.paho_client import paho


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


SHUT_GRACE_S = 1.0
"""How long paho's network thread gets to end once its connection is shut (``end_within``): it
sees the shut connection at its next turn (a select of at most 1 s)."""


class PahoClient(paho.Client):
    """paho's client, remembering why the last socket could not be opened (TLS, refused...).

    The one place the agent extends paho below its public API: ``_create_socket`` (paho 2.x,
    ``Client._create_socket(self)``, called by ``reconnect`` for every attempt) is wrapped, not
    copied; nothing of paho's state is read. paho has no public hook that sees the error
    (``on_connect_fail`` gets none), and ``tests/transport/test_link.py`` fails if the method
    disappears or stops being called."""

    last_socket_error: OSError | None = None

    def _create_socket(self) -> Any:
        try:
            sock = super()._create_socket()
        except OSError as exc:
            self.last_socket_error = exc
            raise
        except ValueError as exc:
            # a name the idna codec refuses (UnicodeError) or one holding a NUL: paho's retry loop
            # catches only OSError, so this ended its network thread for good; now a failed
            # connect like any other, logged and retried
            error = OSError(f"mqtt.host {self.host!r} is not a usable host name: {exc}")
            self.last_socket_error = error
            raise error from exc
        self.last_socket_error = None
        return sock

    def end_within(self, seconds: float) -> bool:
        """Disconnect and end the network thread, waiting at most ``seconds`` and then
        ``SHUT_GRACE_S``; False if the thread is still running (it ends with the process).

        paho's ``loop_stop`` waits until its DISCONNECT is written, and a broker that stopped
        reading with the connection's buffers full never lets it be: it waited until the
        keep-alive gave up, past systemd's stop timeout (found by review). Past ``seconds`` the
        connection is shut, through a duplicate of its descriptor so that paho's socket (SSL or
        not) is not touched from this thread, and paho's next turn ends the thread. A thread inside
        a connect or a TLS handshake (paho's 5 s ``connect_timeout``) is not reached that way."""
        self.disconnect()
        ender = threading.Thread(target=self.loop_stop, name="mqtt-loop-stop", daemon=True)
        ender.start()
        ender.join(max(seconds, 0.0))
        if ender.is_alive():
            sock = self.socket()
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing to shut
                if sock is not None:  # the family only labels the copy: shutdown(2) acts on the fd
                    with socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
                        dup.shutdown(socket.SHUT_RDWR)
            ender.join(SHUT_GRACE_S)
        return not ender.is_alive()


class ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails (``SSLContext.sslsocket_class``)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context that checks the broker's certificate against ``ca`` and its host name,
    optionally presenting ``cert``/``key``; for paho's ``tls_set_context``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.load_verify_locations(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    context.sslsocket_class = ClosingSSLSocket
    return context


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
