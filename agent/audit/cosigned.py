"""Cosigned checkpoints a witness sends back, kept in the audit folder for the auditor.

The receiver publishes each checkpoint it cosigned on ``<base>/audit/cosignature`` (retained).
The device keeps only what is its own: a note that verifies with its own key, for a tree size
it signed (in ``checkpoints.log``), once. ``audit verify`` reads ``cosignatures.log`` as
external checkpoints, so a rewrite of the log after a witness saw it fails verification, and
``--witness`` names whose cosignatures count.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.atomic import append_durable
from agent.audit.note import NoteError, open_checkpoint, split_notes
from agent.audit.store import CHECKPOINTS_FILE

logger = logging.getLogger(__name__)

COSIGNATURES_FILE = "cosignatures.log"
MAX_NOTE_BYTES = 8192


class CosignatureInbox:
    def __init__(self, audit_dir: Path, public_key: Ed25519PublicKey) -> None:
        self.audit_dir = audit_dir
        self.public_key = public_key
        self._lock = threading.Lock()

    def _kept(self) -> set[bytes]:
        try:
            data = (self.audit_dir / COSIGNATURES_FILE).read_bytes()
        except FileNotFoundError:
            return set()
        return {note for _, note in split_notes(data)[0]}

    def _signed_here(self, size: int, root: bytes) -> bool:
        try:
            data = (self.audit_dir / CHECKPOINTS_FILE).read_bytes()
        except OSError:
            return False
        for _, note in split_notes(data)[0]:
            try:
                cp = open_checkpoint(note, self.public_key)
            except NoteError:
                continue
            if cp.size == size and cp.root == root:
                return True
        return False

    def accept(self, payload: bytes) -> bool:
        """Keep a cosigned note of ours; False (logged) for anything else."""
        if not payload:
            return False  # a cleared retained topic
        if len(payload) > MAX_NOTE_BYTES:
            logger.warning("ignored a cosignature message of %d bytes (at most %d)", len(payload),
                           MAX_NOTE_BYTES)
            return False
        try:
            cp = open_checkpoint(payload, self.public_key)
        except NoteError as exc:
            logger.warning("ignored a cosignature message: %s", exc)
            return False
        with self._lock:
            if not self._signed_here(cp.size, cp.root):
                logger.warning("ignored a cosigned checkpoint this device never signed (size %d)", cp.size)
                return False
            if payload in self._kept():
                return False
            fd = os.open(self.audit_dir / COSIGNATURES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                append_durable(fd, payload)
            finally:
                os.close(fd)
        return True
