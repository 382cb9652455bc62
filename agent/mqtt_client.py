"""paho's client module, for every module that uses paho (the agent's output and the fleet
receiver's inbox): imported first through ``agent.lean_imports.import_paho_client``, so without
``urllib.request`` (which paho reads only to find a proxy through PySocks; docs/vision.md,
"Peak RSS"); and ``PahoClient``, paho's client where its public API falls short."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from agent.lean_imports import import_paho_client

import_paho_client()

import paho.mqtt.client as paho  # noqa: E402 - after import_paho_client, which imports it first

__all__ = ["SHUT_GRACE_S", "PahoClient", "paho"]

SHUT_GRACE_S = 1.0
"""How long paho's network thread gets to end once its connection is shut (``end_within``): it
sees the shut connection at its next turn (a select of at most 1 s)."""


class PahoClient(paho.Client):
    """paho's client, remembering why the last socket could not be opened (TLS, refused...).

    The agent extends paho below its public API in two places. ``_create_socket`` (paho 2.x,
    ``Client._create_socket(self)``, called by ``reconnect`` for every attempt) is wrapped, not
    copied; nothing of paho's state is read. paho has no public hook that sees the error
    (``on_connect_fail`` gets none), and ``tests/transport/test_link.py`` fails if the method
    disappears or stops being called. ``end_within`` calls ``_reset_sockets(sockpair_only=True)``
    once the network thread has ended (see there; ``tests/transport/test_link.py`` too)."""

    last_socket_error: OSError | None = None
    host_key = "mqtt.host"
    """The config key of the host, for the error of a name no resolver takes (the receiver's
    is ``source.host``)."""

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
            error = OSError(f"{self.host_key} {self.host!r} is not a usable host name: {exc}")
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
        a connect or a TLS handshake (paho's 5 s ``connect_timeout``) is not reached that way.

        Once the thread has ended, the socket pair ``loop_start`` made to wake it is closed:
        paho closes it only in ``__del__``, and a client in a reference cycle (its callbacks
        hold the transport that holds it) is left to the garbage collector, which may finalise
        the two sockets before the client: unclosed (a ``ResourceWarning`` that failed a test
        run), their descriptors held until a collection."""
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
        if ender.is_alive():
            return False
        self._reset_sockets(sockpair_only=True)
        return True
