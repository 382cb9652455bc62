"""A real mosquitto for tests: TLS with certificates made here, a password file, an ACL file.

Reusable by any test that needs a broker::

    from tests.mosquitto import ACL_PER_DEVICE, Broker, Subscriber, make_pki

    pki = make_pki(tmp_path / "pki", clients=("lobby-1", "dashboard"))
    with Broker(tmp_path / "broker", pki=pki, users={"lobby-1": "s3cret", "dashboard": "pw"},
                acl=ACL_PER_DEVICE) as broker:
        ...  # broker.port on 127.0.0.1; broker.stop() / broker.start() keep the port
        with Subscriber(broker, ["emotion-agent/#"], username="dashboard", password="pw",
                        cert=pki.clients["dashboard"]) as sub:
            sub.wait_for("emotion-agent/lobby-1/stats")

``Broker(folder, allow_anonymous=True)`` without ``pki`` is a plain loopback broker.

Certificates are EC P-256 made with ``cryptography``: a CA, a server certificate for
127.0.0.1/localhost, client certificates (CN = the name; ``expired`` ones ended yesterday),
and a second, unrelated CA for "wrong CA" cases. Passwords go through ``mosquitto_passwd``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ACL_PER_DEVICE = """\
# Each device (username) may write only under its own base topic and read its commands.
pattern write emotion-agent/%u/#
pattern read emotion-agent/%u/cmd/#
pattern write homeassistant/device/emotion_agent_%u/config
pattern write homeassistant/+/emotion_agent_%u/+/config
pattern read homeassistant/status

# A dashboard user reads everything and may send commands.
user dashboard
topic read emotion-agent/#
topic read homeassistant/#
topic write emotion-agent/+/cmd/#
topic write homeassistant/status
"""


def _ephemeral_range() -> range:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(low, high + 1)


def free_port() -> int:
    """A loopback port free now, outside the kernel's ephemeral range: a port the kernel handed
    out (bind to 0) and we released can be taken again as the source port of any outgoing
    connection before the server binds it (a NATS node's route to another took a third node's
    cluster port: "bind: address already in use")."""
    ephemeral = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10_000, 65_536)  # noqa: S311 - a test port, not a secret
        if port in ephemeral:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (cert, key)
    ca_key: Path | None = None  # signs more client certificates (provisioning's lab_ca)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    expired: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (
        now - dt.timedelta(hours=1),
        now + dt.timedelta(days=30),
    )
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(
    folder: Path,
    clients: tuple[str, ...] = (),
    expired: tuple[str, ...] = (),
    foreign: tuple[str, ...] = (),
) -> Pki:
    """A CA, a server certificate, and client certificates.

    ``expired`` names get a certificate from the right CA that ended yesterday; ``foreign``
    names get one signed by the other CA (a valid-looking certificate the broker must refuse).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    _write_cert(_cert("Test CA", ca_key, None, ca=True), folder / "ca.crt")
    _write_key(ca_key, folder / "ca.key")
    _write_cert(_cert("Other CA", other_key, None, ca=True), folder / "other-ca.crt")
    server_key = _key()
    _write_cert(_cert("127.0.0.1", server_key, ("Test CA", ca_key), server=True), folder / "server.crt")
    _write_key(server_key, folder / "server.key")
    made: dict[str, tuple[Path, Path]] = {}
    kinds = [("", n) for n in clients] + [("expired-", n) for n in expired]
    kinds += [("foreign-", n) for n in foreign]
    for tag, name in kinds:
        key = _key()
        issuer = ("Other CA", other_key) if tag == "foreign-" else ("Test CA", ca_key)
        cert = _cert(name, key, issuer, expired=tag == "expired-")
        _write_cert(cert, folder / f"{tag}{name}.crt")
        _write_key(key, folder / f"{tag}{name}.key")
        made[f"{tag}{name}"] = (folder / f"{tag}{name}.crt", folder / f"{tag}{name}.key")
    return Pki(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        other_ca=folder / "other-ca.crt",
        clients=made,
        ca_key=folder / "ca.key",
    )


class Broker:
    """One mosquitto process on 127.0.0.1 with the given security; restartable on the same port."""

    def __init__(
        self,
        folder: Path,
        *,
        pki: Pki | None = None,
        require_certificate: bool = True,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        allow_anonymous: bool = False,
        persistence: bool = False,
    ) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed: run tools/system-deps.sh")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.pki = pki
        self.log = folder / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {folder}/",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # mosquitto would switch to 'mosquitto' and lose our files
        if pki is not None:
            lines += [
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                f"require_certificate {'true' if require_certificate else 'false'}",
                "tls_version tlsv1.2",
            ]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), name, password], check=True)
            pw.chmod(0o600)
            lines.append(f"password_file {pw}")
        if acl is not None:
            (folder / "acl").write_text(acl)
            lines.append(f"acl_file {folder / 'acl'}")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Broker:
        log = self.log.open("ab")
        self._proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """A clean stop (SIGTERM): with persistence on, sessions and queued messages are saved."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.send_signal(signal.SIGCONT)  # a paused broker handles SIGTERM once resumed
            self._proc.wait(10)
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is read or answered (a broker slow to answer)."""
        assert self._proc is not None, "the broker is not running"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`: the broker reads and answers what waited."""
        assert self._proc is not None, "the broker is not running"
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, paused or not (a crash): nothing is saved, what it had not read is lost;
        :meth:`start` brings it back on the same port."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool = False


class Subscriber:
    """An independent paho client that records what it receives (its own thread)."""

    def __init__(
        self,
        broker: Broker,
        topics: list[str],
        *,
        username: str | None = None,
        password: str | None = None,
        cert: tuple[Path, Path] | None = None,
        client_id: str = "test-subscriber",
        persistent: bool = False,
    ) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._topics = topics
        self.subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if broker.pki is not None:
            self.client.tls_set(
                ca_certs=str(broker.pki.ca),
                certfile=str(cert[0]) if cert else None,
                keyfile=str(cert[1]) if cert else None,
            )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect_async(broker.host, broker.port, keepalive=10)

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup)))
            self._cond.notify_all()

    def on_topic(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.messages if m.topic == topic]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(got)} of {count} message(s) on {topic} in {timeout} s")
                self._cond.wait(left)

    def __enter__(self) -> Subscriber:
        """Connect and return once the broker acknowledged the subscriptions."""
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.__exit__()
            raise AssertionError("the test subscriber could not subscribe within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


__all__ = ["ACL_PER_DEVICE", "Broker", "Pki", "Received", "Subscriber", "make_pki", "wait_until"]
