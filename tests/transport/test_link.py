"""Connection errors read by people: what failed and which setting to check."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.broker_files import read_password, tls_context
from agent.errors import ConfigError
from agent.mqtt_client import PahoClient
from agent.transport.link import TransportHealth, explain, telling
from agent.transport.settings import TlsConfig
from tests.mosquitto import free_port, make_pki


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("broker refused the connection: Not authorized", "check mqtt.username, mqtt.password_file"),
        ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
         "not signed by mqtt.tls.ca"),
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
         "set mqtt.tls.cert and key"),
        ("cannot connect to 127.0.0.1:1: ConnectionRefusedError: [Errno 111] Connection refused",
         "check mqtt.host, mqtt.port"),
    ],
)
def test_known_failures_get_a_hint(error: str, hint: str) -> None:
    explained = explain(error)
    assert explained.startswith(f"{error} (")
    assert hint in explained


def test_an_unknown_failure_is_left_as_it_is() -> None:
    assert explain("connection lost: Keep alive timeout") == "connection lost: Keep alive timeout"


EXPIRED = explain("failed to receive on socket: [SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert")
EOF_ONLY = "failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)"


@pytest.mark.parametrize(
    ("previous", "error", "kept"),
    [
        # The broker's alert and its close race: a retry that only saw the close keeps the reason.
        (EXPIRED, EOF_ONLY, EXPIRED),
        # Nothing diagnosed before: the EOF is all we know.
        (None, EOF_ONLY, EOF_ONLY),
        ("connection closed before the broker answered: Unspecified error", EOF_ONLY, EOF_ONLY),
        # A new diagnosis always replaces the old one.
        (EXPIRED, explain("cannot connect to h:1: ConnectionRefusedError"),
         explain("cannot connect to h:1: ConnectionRefusedError")),
    ],
)
def test_a_bare_tls_close_does_not_erase_the_diagnosis(previous: str | None, error: str, kept: str) -> None:
    assert telling(previous, error) == kept


def test_the_password_is_the_first_line_of_the_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\nignored\n")
    f.chmod(0o600)
    assert read_password(f) == "s3cret"


def test_a_missing_or_empty_password_file_names_the_setting(tmp_path: Path) -> None:
    missing = r"mqtt.password_file .*/nope: password file not found"
    with pytest.raises(ConfigError, match=missing):
        read_password(tmp_path / "nope")
    (tmp_path / "empty").write_text("")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(ConfigError, match="the file is empty; put the password on line 1"):
        read_password(tmp_path / "empty")


def test_the_health_body_holds_only_integers_strings_and_none() -> None:
    health = TransportHealth(state="connected", protocol="5", last_error=None, backlog=3, spool_bytes=900,
                             oldest_unsent_ms=1_700_000_000_000, dropped={"retention": 2, "size_cap": 1},
                             connects=4, failures=1, commands_accepted=2, commands_rejected=5)
    body = health.to_body()
    assert body["spool_backlog"] == 3
    assert body["spool_dropped"] == 3
    assert all(v is None or type(v) in (int, str) for v in body.values())


# --- the socket: paho's public TLS hook, and the one documented subclass point -----------------


def test_a_refused_connection_is_remembered_by_the_client() -> None:
    """``PahoClient._create_socket`` sees every attempt paho makes (paho 2.x calls it from
    ``reconnect``); if paho renamed or bypassed it, this error would be lost."""
    client = PahoClient(CallbackAPIVersion.VERSION2, client_id="t")
    with pytest.raises(ConnectionRefusedError):
        client.connect("127.0.0.1", free_port())
    assert isinstance(client.last_socket_error, ConnectionRefusedError)


def test_ending_the_network_thread_closes_the_socket_pair_that_woke_it() -> None:
    """paho closes its wake-up pair only in ``__del__``; a client in a reference cycle left
    both sockets to the garbage collector, which finalised them unclosed (a ResourceWarning
    that failed the test run). ``end_within`` closes them once the thread has ended."""
    client = PahoClient(CallbackAPIVersion.VERSION2, client_id="t")
    client.reconnect_delay_set(min_delay=0.01, max_delay=0.01)  # type: ignore[arg-type]
    client.connect_async("127.0.0.1", free_port())
    client.loop_start()
    pair = [client._sockpairR, client._sockpairW]  # paho's own attributes: what this is about
    assert all(s is not None and s.fileno() >= 0 for s in pair)
    assert client.end_within(5.0) is True
    assert all(s is not None and s.fileno() == -1 for s in pair), "the pair was left open"


def test_a_host_name_the_idna_codec_refuses_is_a_failed_connect() -> None:
    """socket raises UnicodeError for an empty or over-long label; paho retries only OSError."""
    client = PahoClient(CallbackAPIVersion.VERSION2, client_id="t")
    with pytest.raises(OSError, match=r"mqtt.host 'broker..example' is not a usable host name"):
        client.connect("broker..example", 1883)
    assert "label empty or too long" in str(client.last_socket_error)


def test_a_host_name_the_idna_codec_refuses_is_retried_not_a_dead_network_thread() -> None:
    client = PahoClient(CallbackAPIVersion.VERSION2, client_id="t")
    client.reconnect_delay_set(min_delay=0.01, max_delay=0.01)  # type: ignore[arg-type]
    failures: list[str] = []
    retried = threading.Event()

    def failed(_c: object, _u: object) -> None:
        failures.append(str(client.last_socket_error))
        if len(failures) >= 2:
            retried.set()

    client.on_connect_fail = failed
    client.connect_async("a" * 64 + ".example", 1883)
    client.loop_start()
    try:
        assert retried.wait(10), "paho's network thread stopped retrying"
    finally:
        client.disconnect()
        client.loop_stop()
    assert all("is not a usable host name" in f for f in failures), failures


def test_a_failed_tls_handshake_closes_its_socket(tmp_path: Path) -> None:
    """The broker's certificate is not from the configured CA: the handshake fails and the
    socket is closed at once (paho's own wrapping leaves it open until garbage collection)."""
    pki = make_pki(tmp_path / "pki")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ours, theirs = socket.socketpair()

    def serve() -> None:
        s = server_ctx.wrap_socket(theirs, server_side=True, do_handshake_on_connect=False)
        with s, contextlib.suppress(ssl.SSLError, OSError):
            s.do_handshake()

    server = threading.Thread(target=serve)
    server.start()
    sock = tls_context(TlsConfig(ca=pki.other_ca)).wrap_socket(
        ours, server_hostname="127.0.0.1", do_handshake_on_connect=False
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        sock.do_handshake()
    server.join(10)
    assert sock.fileno() == -1


def test_the_tls_context_checks_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", clients=("dev",))
    cert, key = pki.clients["dev"]
    context = tls_context(TlsConfig(ca=pki.ca, cert=cert, key=key))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
