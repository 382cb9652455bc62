"""A junk line in cosignatures.log with a trusted witness's name and key ID: a warning, the
device's own log still verifies (anyone who can publish on the cosignature topic can add one)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.cosignature import cosign, cosigner_key_id
from agent.audit.cosigned import COSIGNATURES_FILE
from agent.audit.note import SIG_PREFIX, split_notes
from agent.audit.verify import verify_log
from agent.clock import FakeClock

from .conftest import OpenLog
from .helpers import fill

NAME = "witness.test"


def _junk(note: bytes, witness: Ed25519PrivateKey) -> bytes:
    blob = cosigner_key_id(NAME, witness.public_key()) + struct.pack(">Q", 1_700_000_000) + b"\0" * 64
    return f"{SIG_PREFIX}{NAME} {base64.b64encode(blob).decode()}\n".encode()


def _log(open_log: OpenLog, clock: FakeClock, tmp_path: Path) -> tuple[Path, bytes]:
    log = open_log(checkpoint_every_entries=5)
    fill(log, clock, 2)
    log.close()
    audit = tmp_path / "audit"
    last = split_notes((audit / "checkpoints.log").read_bytes())[0][-1][1]
    return audit, last


def test_a_junk_cosignature_line_is_a_warning_not_a_failure(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    witness = Ed25519PrivateKey.generate()
    audit, note = _log(open_log, clock, tmp_path)
    (audit / COSIGNATURES_FILE).write_bytes(note + _junk(note, witness))
    result = verify_log(audit, key.public_key(), witnesses=[(NAME, witness.public_key())])
    assert result.problems == []
    assert result.cosigned == []
    assert result.warnings == [
        f"{COSIGNATURES_FILE} line 1: cosignature by {NAME} does not verify: altered checkpoint or "
        "line: not counted as cosigned"
    ]


def test_a_junk_line_does_not_hide_a_valid_cosignature_after_it(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    witness = Ed25519PrivateKey.generate()
    audit, note = _log(open_log, clock, tmp_path)
    cosigned = note + _junk(note, witness) + cosign(note, NAME, witness, 1_700_000_001).encode()
    (audit / COSIGNATURES_FILE).write_bytes(cosigned)
    result = verify_log(audit, key.public_key(), witnesses=[(NAME, witness.public_key())])
    assert (result.problems, result.warnings) == ([], [])
    assert [(name, size) for _, name, size in result.cosigned] == [(NAME, result.size)]
