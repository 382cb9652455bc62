"""``emotion-agent keys rotate``: a new device key, announced by the old one, with the service stopped.

Why with the service stopped: under systemd the key file is root's (``/etc/emotion-agent``,
read-only to the service, which gets a copy as a credential), so the service cannot replace
its own key; and two processes must never sign from one sequence state. The command takes the
signer's lock in ``state_dir`` and refuses while the service holds it. As root, it works in
``state_dir`` under the folder owner's uid and gid, so every file it writes there stays the
service's.

Four steps; a crash between any two leaves a device that receivers can follow, and running the
command again finishes the same rotation (the staged key is the marker):

1. **stage**: a new key ``<key>.next`` beside the current one (PKCS#8 PEM, 0600, the current
   key file's owner), unless one is staged already.
2. **announce** (old key), unless the audit log already records the rotation to the staged
   key: a ``key_event`` rotation entry (old and new kid and public key); the ``key-rotation``
   notice ``{"new_key": <JWK>}`` on ``<base>/key-rotation`` (retained), signed by the old key,
   to every output of the config (the MQTT output spools it; the service sends the spool first
   when it starts); the log is closed, which signs a checkpoint over both with the old key.
3. **attest** (new key): the log is opened and closed with the new key, so ``state.json`` and a
   checkpoint over the rotation entry are signed by it: ``run`` and ``audit verify`` holding
   either key follow the other (agent/audit/rotation.py).
4. **switch**: the old public key is kept as ``<stem>.<old kid>.pub.jwk``, ``<stem>.pub.jwk`` /
   ``.pub.b64`` (when present) get the new key, ``<key>.next`` is renamed over ``<key>``, and
   the old key's bytes are overwritten with zeros before its file is closed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent import state_dir
from agent.atomic import fsync_dir, write_atomic
from agent.audit import AuditLog
from agent.audit.entries import decode_entry
from agent.audit.rotation import find_rotations, rotation_fields
from agent.audit.store import iter_lines, list_segments
from agent.audit.verify import verify_log
from agent.clock import Clock
from agent.config import AgentConfig
from agent.crypto.envelope import KEY_ROTATION, Signer, rotation_body
from agent.crypto.keys import kid_for, load_private_key, public_jwk, raw_public
from agent.crypto.seqstore import LOCK_NAME
from agent.errors import KeyFileError, StorageError
from agent.outputs.base import Output
from agent.outputs.factory import build_outputs
from agent.outputs.jsonl import JsonLinesOutput
from agent.publisher import Publisher
from agent.state_check import check_state_dir
from agent.transport.drop_tally import drop_message

if TYPE_CHECKING:
    from agent.transport.spool_types import DropReport

logger = logging.getLogger(__name__)

STAGED_SUFFIX = ".next"
NOTICE_TOPIC = "key-rotation"
"""Relative to the base topic; retained, so a receiver that subscribes later still sees it."""


class ServiceRunning(KeyFileError):
    """The service holds the signer's lock: the key cannot be rotated under it (exit 2)."""


@dataclass(frozen=True)
class Rotated:
    """What the command did, for its report."""

    old_kid: str
    new_kid: str
    key_path: Path
    old_public: Path
    announced: bool
    """False when a re-run found the rotation already announced in the audit log."""


def rotate_key(cfg: AgentConfig, key_path: Path, clock: Clock) -> Rotated:
    """Run the four steps for the device of ``cfg`` whose private key file is ``key_path``."""
    key_path = key_path.absolute()
    _refuse_if_running(cfg.state_dir)  # before anything is written
    if key_path.is_symlink():  # the switch opens it O_NOFOLLOW: refused there, after step 3
        raise KeyFileError(
            f"{key_path}: is a symbolic link (to {os.readlink(key_path)}); the rotation replaces the "
            f"key file itself: give the file's own path with --key ({key_path.resolve()})"
        )
    old = load_private_key(key_path)
    new = _stage(key_path)
    old_kid, new_kid = kid_for(old.public_key()), kid_for(new.public_key())
    if old_kid == new_kid:
        raise KeyFileError(f"{key_path}{STAGED_SUFFIX}: is the current key; remove it and run again")
    with _as_owner(cfg.state_dir):
        state_dir.prepare(cfg.state_dir)
        checked = check_state_dir(cfg.state_dir, old.public_key())
        with Signer(cfg.device_id, old, cfg.state_dir, clock, floor=checked.floor) as signer:
            announced = not _recorded(cfg.state_dir / "audit", new_kid)
            if announced:
                _announce(cfg, clock, signer, old, new=new.public_key(), linked=checked.linked_keys)
            _open_log(cfg, clock, new, (old.public_key(),)).close()  # attest: state.json, checkpoint
            _check_linked(cfg.state_dir / "audit", old.public_key(), new.public_key())
    with _locked(cfg.state_dir):  # as root again: the key's folder is not the service's
        old_public = _switch(key_path, old.public_key(), new.public_key())
    logger.info("device key rotated", extra={"fields": {"old_kid": old_kid, "new_kid": new_kid}})
    return Rotated(old_kid, new_kid, key_path, old_public, announced)


# --- 1. stage ----------------------------------------------------------------------------------


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _stage(key_path: Path) -> Ed25519PrivateKey:
    """The staged key: the one a crashed run left, or a new one written atomically."""
    staged = key_path.with_name(key_path.name + STAGED_SUFFIX)
    if staged.exists() or staged.is_symlink():
        key = load_private_key(staged)  # the same checks as the device key
    else:
        key = Ed25519PrivateKey.generate()
        try:
            write_atomic(staged, _pem(key), 0o600)
        except OSError as exc:
            raise KeyFileError(f"{staged}: cannot write the new key: {exc.strerror or exc}") from exc
    _same_owner(staged, key_path)
    return key


def _same_owner(path: Path, like: Path) -> None:
    if os.geteuid() == 0:
        info = like.stat()
        os.chown(path, info.st_uid, info.st_gid)


@contextlib.contextmanager
def _as_owner(folder: Path) -> Iterator[None]:
    """As root, use the state folder's uid and gid meanwhile, so files made there stay its owner's."""
    try:
        info = folder.stat()
    except OSError:
        info = None
    if os.geteuid() != 0 or info is None or info.st_uid == 0:
        yield
        return
    gid = os.getegid()
    os.setegid(info.st_gid)
    os.seteuid(info.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(gid)


# --- 2. announce -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``signer-state.lock`` (the running service holds it: refused, nothing written)."""
    lock = folder / LOCK_NAME
    if not lock.exists():
        yield
        return
    with lock.open("ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceRunning(
                f"{folder}: the agent is running (it holds {LOCK_NAME}); stop it first "
                "(`systemctl stop emotion-agent`), rotate, then start it again"
            ) from None
        yield


def _refuse_if_running(folder: Path) -> None:
    """Checked first; the signer then holds the lock for steps 2 and 3, this module for step 4."""
    with _locked(folder):
        pass


def _recorded(audit: Path, new_kid: str) -> bool:
    """Did an earlier run announce this staged key already (and stop before the switch)? Only
    if the notice's ``publish`` entry follows the rotation entry: the notice was handed to every
    output. An earlier run that stopped in between announces again (a second notice for the
    same key is harmless)."""
    if not audit.is_dir():
        return False
    segments = list_segments(audit)
    rotations, _ = find_rotations(segments)
    first = min((r.index for r in rotations if r.new_kid == new_kid), default=None)
    if first is None:
        return False
    for _start, path in segments:
        for line in iter_lines(path):
            if b'"kind":"publish"' in line and f'/{NOTICE_TOPIC}"'.encode() in line:
                entry = decode_entry(line)
                if entry.index > first and entry.data["topic"].endswith(f"/{NOTICE_TOPIC}"):
                    return True
    return False


def _open_log(
    cfg: AgentConfig, clock: Clock, key: Ed25519PrivateKey, linked: tuple[Ed25519PublicKey, ...]
) -> AuditLog:
    return AuditLog.open(
        cfg.state_dir / "audit",
        key,
        f"emotion-agent/{cfg.device_id}",
        clock,
        cfg.audit,
        retention_days=cfg.retention.audit_days,
        linked_keys=linked,
    )


def _announce(
    cfg: AgentConfig,
    clock: Clock,
    signer: Signer,
    old: Ed25519PrivateKey,
    *,
    new: Ed25519PublicKey,
    linked: tuple[Ed25519PublicKey, ...],
) -> None:
    """The audit entry and the notice, both signed (the notice directly, the entry by the
    checkpoint ``close`` signs) by the old key."""
    audit = _open_log(cfg, clock, old, (*linked, new))
    try:
        if signer.rebuilt is not None:
            audit.append("error", {"code": "signer_state_rebuilt", "message": signer.rebuilt})
        if audit.append("key_event", rotation_fields(old.public_key(), new)) < 0:
            raise StorageError(
                f"the audit log cannot be written ({audit.write_error}); nothing was announced "
                "and the key was not switched: free the space and run the command again"
            )
        outputs = build_outputs(
            cfg,
            clock,
            public_key=old.public_key(),
            on_command=lambda _command: None,  # never connected: no command arrives
            on_drop=lambda r: _dropped(audit, r),
            previous_keys=linked,
        )
        base = cfg.mqtt.base_topic or f"emotion-agent/{cfg.device_id}"
        publisher = Publisher(signer, outputs, base, audit)
        try:
            _spool_only(outputs)
            message = publisher.publish(NOTICE_TOPIC, rotation_body(new), retain=True, typ=KEY_ROTATION)
        finally:
            for output in outputs:
                output.stop(0.0)  # never connected: nothing to wait for
        if message is None:
            raise StorageError(
                f"the key-rotation notice could not be written ({publisher.error}); the key was "
                "not switched: free the space and run the command again"
            )
    finally:
        audit.close()


def _dropped(audit: AuditLog, report: DropReport) -> None:
    """The spool's limits removed unsent messages while the notice went in: audited, as by the service."""
    message = drop_message(report.count, report.bytes, report.reason)
    audit.append("error", {"code": "spool_dropped", "message": message})


def _spool_only(outputs: list[Output]) -> None:
    """Open JSON-lines files; leave MQTT unstarted (no connection, no ``online``): its ``send``
    puts the notice in the spool, which the service sends first when it starts."""
    for output in outputs:
        if isinstance(output, JsonLinesOutput):
            output.start()


def _check_linked(audit: Path, old: Ed25519PublicKey, new: Ed25519PublicKey) -> None:
    """Before the switch, the log must link each key to the other as the next start (new key)
    and an auditor holding either key will read it; a checkpoint the disk refused would not."""
    for given, other in ((new, old), (old, new)):
        if kid_for(other) not in {kid_for(k) for k in verify_log(audit, given).keys}:
            raise StorageError(
                f"{audit}: the audit log does not yet link key {kid_for(given)} to {kid_for(other)} "
                "by a signed checkpoint (was a write refused?); the key was not switched: run the "
                "command again"
            )


# --- 4. switch ---------------------------------------------------------------------------------


def _switch(key_path: Path, old: Ed25519PublicKey, new: Ed25519PublicKey) -> Path:
    """Public files first, then the rename, then the old key's bytes are zeroed; returns the
    kept old public key's path."""
    folder, stem = key_path.parent, key_path.name.removesuffix(".key")
    kept = folder / f"{stem}.{kid_for(old)}.pub.jwk"
    jwk, raw = folder / f"{stem}.pub.jwk", folder / f"{stem}.pub.b64"
    try:
        write_atomic(kept, _jwk_text(old), 0o644)
        if jwk.exists():
            write_atomic(jwk, _jwk_text(new), 0o644)
        if raw.exists():
            write_atomic(raw, (base64.b64encode(raw_public(new)).decode("ascii") + "\n").encode(), 0o644)
        fd = os.open(key_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            os.replace(key_path.with_name(key_path.name + STAGED_SUFFIX), key_path)
            fsync_dir(folder)
            os.pwrite(fd, b"\0" * size, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot switch to the new key: {exc.strerror or exc}") from exc
    return kept


def _jwk_text(key: Ed25519PublicKey) -> bytes:
    return (json.dumps(public_jwk(key), indent=2) + "\n").encode()
