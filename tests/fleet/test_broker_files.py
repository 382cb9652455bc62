"""The receiver's broker files are read as the agent's (``agent.preflight``, ``read_password``):
each refusal names its ``source.`` key and the file. The password was ``read_text``: a FIFO
hung, /dev/zero ran out of memory, non-UTF-8 text was a traceback and an empty file "could not
be read"; a missing or broken TLS file was paho's bare OSError or SSL error, naming no key."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.fleet.mqtt_inbox import MqttInbox
from agent.fleet.settings import BrokerTlsSettings, MqttSourceSettings
from tests.mosquitto import Broker, free_port, make_pki, wait_until


def _inbox(**fields: object) -> MqttInbox:
    return MqttInbox(MqttSourceSettings.model_validate({"kind": "mqtt", **fields}), "rx-1")


@pytest.mark.parametrize(
    ("write", "said"),
    [
        (lambda p: p.write_bytes(b"\xff\xfe secret\n"), "the password is not UTF-8 text"),
        (lambda p: p.write_text(""), "the file is empty; put the password on line 1"),
        (os.mkfifo, "the password file must be a regular file, not a FIFO (named pipe)"),
    ],
)
def test_a_password_file_that_cannot_be_used_names_the_key(tmp_path: Path, write: object, said: str) -> None:
    path = tmp_path / "password"
    write(path)  # type: ignore[operator]
    if path.is_file():
        path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        _inbox(username="rx", password_file=path)
    assert str(info.value) == f"source.password_file {path}: {said}"


def test_a_tls_file_that_cannot_be_used_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError) as info:
        _inbox(tls=BrokerTlsSettings(ca=missing))
    assert str(info.value).startswith(f"source.tls.ca {missing}: CA certificate not found")
    missing.write_text("garbage\n")
    with pytest.raises(ConfigError) as info:
        _inbox(tls=BrokerTlsSettings(ca=missing))
    assert str(info.value) == f"source.tls.ca {missing}: not a PEM file (no -----BEGIN line)"


def test_a_client_certificate_without_a_key_file_is_read_with_its_key_or_refused(tmp_path: Path) -> None:
    """``source.tls.cert`` alone (the key in the same file) was given to paho, which loaded it;
    the shared check loaded a client certificate only with a key file, so the receiver
    connected without one, and a broker that asks for it refused the receiver without a word."""
    pki = make_pki(tmp_path / "pki", clients=("rx-1",))
    cert, key = pki.clients["rx-1"]
    combined = tmp_path / "rx-1.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    combined.chmod(0o600)
    _inbox(tls=BrokerTlsSettings(ca=pki.ca, cert=combined))  # accepted
    with pytest.raises(ConfigError) as info:
        _inbox(tls=BrokerTlsSettings(ca=pki.ca, cert=cert))
    assert str(info.value).startswith(f"source.tls.cert {cert}: not a PEM certificate and its unencrypted")


def test_a_ca_bundle_with_non_ascii_comments_is_read(tmp_path: Path) -> None:
    """certifi-style bundles name each CA in a comment, some in their own language: the check
    raised TypeError (a traceback) on the first non-ASCII byte."""
    pki = make_pki(tmp_path / "pki")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("# Issuer: CN=Főtanúsítvány\n".encode() + pki.ca.read_bytes())
    _inbox(tls=BrokerTlsSettings(ca=bundle))


def test_a_broker_that_cannot_be_reached_is_logged_with_why_and_stop_is_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``collect`` said "receiver running" and then nothing while the broker was away (found by
    review); now each failed attempt is a warning with the socket's error (throttled)."""
    port = free_port()
    inbox = _inbox(host="127.0.0.1", port=port)
    caplog.set_level(logging.INFO, logger="agent.fleet.mqtt_inbox")
    inbox.start(lambda delivery: None)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.05)
    finally:
        began = time.monotonic()
        inbox.stop()
        took = time.monotonic() - began
    assert [r.getMessage() for r in caplog.records][:1] == [
        f"cannot connect to the broker 127.0.0.1:{port}: ConnectionRefusedError: [Errno 111] "
        "Connection refused; retrying"
    ]
    assert caplog.records[0].levelno == logging.WARNING
    assert took < 3.0


def test_a_broker_that_refuses_the_receiver_is_logged_as_refused_not_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """paho calls on_disconnect after a refused CONNECT too: each attempt was logged as "broker
    refused the receiver" (no reason, unthrottled) and then as a lost connection ("Protocol
    error") although the receiver never connected (found by review)."""
    caplog.set_level(logging.INFO, logger="agent.fleet.mqtt_inbox")
    with Broker(tmp_path / "broker", users={"rx": "right"}) as broker:
        password = tmp_path / "password"
        password.write_text("wrong\n")
        password.chmod(0o600)
        inbox = _inbox(host=broker.host, port=broker.port, username="rx", password_file=password)
        inbox.start(lambda delivery: None)
        try:
            wait_until(lambda: len(caplog.records) > 0, what="a refusal")
            time.sleep(2.5)  # paho retries after 1 s, then 2 s: at least one more refusal
        finally:
            inbox.stop()
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"broker {broker.host}:{broker.port} refused the receiver: Not authorized; retrying"]
