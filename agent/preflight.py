"""The files a config names, read as ``run`` reads them, so ``check-config`` finds what ``run`` would.

A config can be valid and still name a key that is a FIFO, a password file anyone may read, or
a certificate that is not PEM. ``check_files`` opens each (regular file, bounded size, mode
checked) and parses it: the device key, the MQTT password, the TLS CA, client certificate and
key, the operator's public key. ``run`` calls it before anything starts; ``check-config``
calls it after the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.crypto.keys import load_private_key, load_public_key
from agent.errors import ConfigError, KeyFileError
from agent.user_files import MAX_SECRET_BYTES, MAX_TEXT_BYTES, read_user_bytes

if TYPE_CHECKING:
    import ssl

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from agent.config import AgentConfig
    from agent.transport.settings import TlsConfig


def check_files(cfg: AgentConfig, config_path: Path | None = None) -> Ed25519PrivateKey:
    """Load the device key and, when MQTT is on, its password and TLS files; return the key.

    A bare ``keys.private_key`` is systemd's credential, else the file beside ``config_path``
    (``agent.crypto.keys.resolve_key_path``), so ``check-config -c /etc/emotion-agent/agent.yaml``
    reads the key the service is given wherever it is run from.

    Raises KeyFileError or ConfigError (exit 2) naming the key and file. With MQTT off neither
    paho nor ``ssl`` is imported (1.3 MB of the peak RSS of ``run``, docs/vision.md)."""
    key = load_private_key(cfg.keys.private_key, config_path.parent if config_path is not None else None)
    mqtt = cfg.mqtt
    if mqtt.enabled:
        from agent.transport.link import read_password  # noqa: PLC0415 - paho only when MQTT is on

        if mqtt.username is not None and mqtt.password_file is not None:
            read_password(mqtt.password_file)
        if mqtt.tls is not None:
            tls_context(mqtt.tls)
        if mqtt.commands.operator_key is not None:
            operator_key(mqtt.commands.operator_key)
    return key


def operator_key(path: Path) -> Ed25519PublicKey:
    """``mqtt.commands.operator_key``, read as a bounded regular file, then parsed."""
    try:
        read_user_bytes(path, "operator public key", ConfigError, max_bytes=MAX_TEXT_BYTES)
        return load_public_key(path)
    except (ConfigError, KeyFileError) as exc:
        raise ConfigError(f"mqtt.commands.operator_key {exc}") from None


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The client TLS context ``run`` would build, from files checked first (paho opens them by
    name and would hang on a FIFO)."""
    import ssl  # noqa: PLC0415 - only when MQTT uses TLS

    ca = _pem(tls.ca, "ca", "CA certificate", MAX_TEXT_BYTES)
    if tls.cert is not None:
        _pem(tls.cert, "cert", "client certificate", MAX_SECRET_BYTES)
    if tls.key is not None:
        _pem(tls.key, "key", "client private key", MAX_SECRET_BYTES, secret=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"mqtt.tls.ca {tls.ca}: not a PEM CA certificate ({exc})") from None
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"mqtt.tls.cert {tls.cert} / mqtt.tls.key {tls.key}: not a PEM certificate and its "
                f"unencrypted private key ({exc})"
            ) from None
    return ctx


def _pem(path: Path, key: str, what: str, max_bytes: int, *, secret: bool = False) -> bytes:
    try:
        data = read_user_bytes(
            path, what, ConfigError, max_bytes=max_bytes, readable_by="group" if secret else None
        )
    except ConfigError as exc:
        raise ConfigError(f"mqtt.tls.{key} {exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"mqtt.tls.{key} {path}: not a PEM file (no -----BEGIN line)")
    return data
