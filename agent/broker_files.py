"""The files of a broker connection, checked before paho opens them by name (it would hang on
a FIFO, read /dev/zero until memory ran out, and name no key in its errors): the password file
and the TLS CA, certificate and key; and the TLS context made of them, whose sockets close
themselves when the handshake fails (paho's own wrapping leaves them open: one ResourceWarning
per retry). Shared by the agent (``mqtt.``) and the fleet receiver (``source.``), whose errors
name their own keys.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.errors import ConfigError
from agent.user_files import MAX_SECRET_BYTES, MAX_TEXT_BYTES, read_user_bytes

if TYPE_CHECKING:
    import ssl

MAX_PASSWORD_BYTES = 4096


def read_password(path: Path, key: str = "mqtt.password_file") -> str:
    """The first line of the password file ``key`` names: a regular file of at most 4 KiB that
    others cannot read (owner, or a root-owned file shared with the service group); never logged."""
    try:
        data = read_user_bytes(
            path, "password file", ConfigError, max_bytes=MAX_PASSWORD_BYTES, readable_by="group"
        )
        text = data.decode("utf-8")
    except ConfigError as exc:
        raise ConfigError(f"{key} {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path}: the password is not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{key} {path}: the file is empty; put the password on line 1")
    return lines[0]


class TlsFiles(Protocol):
    """The TLS files of a broker connection: the agent's ``mqtt.tls``, a receiver's ``source.tls``."""

    @property
    def ca(self) -> Path: ...
    @property
    def cert(self) -> Path | None: ...
    @property
    def key(self) -> Path | None: ...


@functools.cache
def closing_ssl_socket() -> type[ssl.SSLSocket]:
    """An SSL socket class that closes its socket when the handshake fails
    (``SSLContext.sslsocket_class``); made on first use, as ``ssl`` is imported only for TLS."""
    import ssl  # noqa: PLC0415 - only when MQTT uses TLS

    class ClosingSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except BaseException:
                self.close()
                raise

    return ClosingSSLSocket


def tls_context(tls: TlsFiles, section: str = "mqtt.tls") -> ssl.SSLContext:
    """The client context that checks the broker's certificate against the CA and its host name,
    optionally presenting a client certificate, from files checked first (paho opens them by name
    and would hang on a FIFO); errors name ``section``'s keys. For paho's ``tls_set_context``."""
    import ssl  # noqa: PLC0415 - only when MQTT uses TLS

    ca = _pem(tls.ca, f"{section}.ca", "CA certificate", MAX_TEXT_BYTES)
    if tls.cert is not None:
        _pem(tls.cert, f"{section}.cert", "client certificate", MAX_SECRET_BYTES)
    if tls.key is not None:
        _pem(tls.key, f"{section}.key", "client private key", MAX_SECRET_BYTES, secret=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:  # text outside the PEM blocks (a bundle's "# Issuer: ..." comments) may be any UTF-8
        ctx.load_verify_locations(cadata=ca.decode("ascii", "ignore"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{section}.ca {tls.ca}: not a PEM CA certificate ({exc})") from None
    if tls.cert is not None:  # without a key, the certificate's file holds its key too
        keyfile = str(tls.key) if tls.key is not None else None
        try:
            ctx.load_cert_chain(str(tls.cert), keyfile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            files = f"{section}.cert {tls.cert}" + (f" / {section}.key {tls.key}" if keyfile else "")
            raise ConfigError(
                f"{files}: not a PEM certificate and its unencrypted private key ({exc})"
            ) from None
    ctx.sslsocket_class = closing_ssl_socket()
    return ctx


def _pem(path: Path, key: str, what: str, max_bytes: int, *, secret: bool = False) -> bytes:
    try:
        data = read_user_bytes(
            path, what, ConfigError, max_bytes=max_bytes, readable_by="group" if secret else None
        )
    except ConfigError as exc:
        raise ConfigError(f"{key} {exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{key} {path}: not a PEM file (no -----BEGIN line)")
    return data
