"""The files a config names, read as ``run`` reads them, so ``check-config`` finds what ``run`` would.

A config can be valid and still name a key that is a FIFO, a password file anyone may read, or
a certificate that is not PEM. ``check_files`` opens each (regular file, bounded size, mode
checked) and parses it: the device key, the MQTT password, the TLS CA, client certificate and
key, the operator's public key; and the one file it appends to, ``outputs.jsonl``, must be
writable. ``run`` calls it before anything starts; ``check-config`` calls it after the schema.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.broker_files import read_password, tls_context
from agent.crypto.keys import load_private_key, load_public_key
from agent.errors import ConfigError, InputError, KeyFileError, SourceError
from agent.user_files import MAX_TEXT_BYTES, file_kind, read_user_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from agent.config import AgentConfig


def check_files(cfg: AgentConfig, config_path: Path | None = None) -> Ed25519PrivateKey:
    """Load the device key and, when MQTT is on, its password and TLS files; return the key.

    A bare ``keys.private_key`` is systemd's credential, else the file beside ``config_path``
    (``agent.crypto.keys.resolve_key_path``), so ``check-config -c /etc/emotion-agent/agent.yaml``
    reads the key the service is given wherever it is run from.

    Raises KeyFileError or ConfigError (exit 2) naming the key and file; every file is tried,
    so ConfigError lists each one that failed (check-config said one per run: the key, then
    the CA, then the password file, found by a new-user trial). With MQTT off neither paho nor
    ``ssl`` is imported (1.3 MB of the peak RSS of ``run``, docs/vision.md)."""
    failed: list[InputError] = []

    def tried(check: Callable[[], object]) -> None:
        try:
            check()
        except InputError as exc:
            failed.append(exc)

    keys: list[Ed25519PrivateKey] = []
    tried(lambda: keys.append(_device_key(cfg, config_path)))
    mqtt = cfg.mqtt
    if mqtt.enabled:
        password, tls, operator = mqtt.password_file, mqtt.tls, mqtt.commands.operator_key
        if mqtt.username is not None and password is not None:
            tried(lambda: read_password(password))
        if tls is not None:
            tried(lambda: tls_context(tls))
        if operator is not None:
            tried(lambda: operator_key(operator))
    tried(lambda: check_output_file(cfg.outputs.jsonl))
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise ConfigError(f"{len(failed)} file(s) the config names cannot be used", [str(e) for e in failed])
    return keys[0]


def _device_key(cfg: AgentConfig, config_path: Path | None) -> Ed25519PrivateKey:
    try:
        return load_private_key(cfg.keys.private_key, config_path.parent if config_path is not None else None)
    except KeyFileError as exc:  # named by the setting too: an installer edits that, not the path
        raise KeyFileError(f"keys.private_key: {exc}") from None


def check_source(source: str) -> None:
    """A file ``camera.source`` opened as ``run`` opens it, then closed: a missing file or one
    that is no video is refused naming the key (SourceError, exit 2) before anything starts. A
    live camera is not tried: it may be busy with the service, and one that does not open is a
    reconnecting state, not a bad config (``CameraFeed.check`` decides alike on a reload). Core
    dumps must be off first: opening a clip may decode its first frame."""
    from agent.camera.base import SourceOptions, open_source, resolve  # noqa: PLC0415 - OpenCV
    from agent.clock import SystemClock  # noqa: PLC0415

    camera_log = logging.getLogger("agent.camera")
    level = camera_log.level
    camera_log.setLevel(max(camera_log.getEffectiveLevel(), logging.WARNING))  # "opened" is not news here
    try:
        if resolve(source)[0] != "replay":
            return
        open_source(source, SourceOptions(realtime=False), SystemClock()).close()
    except InputError as exc:
        raise SourceError(f"camera.source {exc}") from None
    finally:
        camera_log.setLevel(level)


def check_output_file(target: str | None) -> None:
    """``outputs.jsonl``: the file ``run`` appends to must be one it can open for writing, or
    create in an existing folder. ConfigError (exit 2) naming the key: before, the start went on
    to the outputs and stopped on a bare OSError (exit 1), which systemd restarted in vain, and
    ``check-config`` called the config valid. Nothing is created or changed here."""
    if target is None or target == "-":
        return
    path = Path(target)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        _check_creatable(path)
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"outputs.jsonl {path}: cannot inspect it: {exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO nobody reads blocked the start, deaf to SIGTERM
        raise ConfigError(
            f"outputs.jsonl {path}: is {file_kind(info.st_mode)}, not a regular file (use '-' for "
            "standard output)"
        )
    if not os.access(path, os.W_OK):
        raise ConfigError(f"outputs.jsonl {path}: {_unwritable(path)}")


def _check_creatable(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"outputs.jsonl {path}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"outputs.jsonl {path}: cannot be created: {folder} {_unwritable(folder)}")


def _unwritable(path: Path) -> str:
    """Why this process may not write ``path``: a read-only mount (the unit's sandbox), or modes."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (
            "is on a read-only file system (the service may write only under its state_dir: put "
            "the file there, or give its folder to ReadWritePaths= in `systemctl edit emotion-agent`)"
        )
    return f"is not writable by this user (uid {os.geteuid()})"


def operator_key(path: Path) -> Ed25519PublicKey:
    """``mqtt.commands.operator_key``, read as a bounded regular file, then parsed."""
    try:
        read_user_bytes(path, "operator public key", ConfigError, max_bytes=MAX_TEXT_BYTES)
        return load_public_key(path)
    except (ConfigError, KeyFileError) as exc:
        raise ConfigError(f"mqtt.commands.operator_key {exc}") from None
