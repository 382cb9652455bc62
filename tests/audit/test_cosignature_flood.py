"""The device's cosignature inbox under a flood: the device's checkpoint notes are public (the
retained ``audit/checkpoint``), so anyone on the broker could send them back with junk
"cosignature" lines. Each distinct one was kept and fsync'd, and each message re-read and
re-verified both whole files: 3,300 of them grew ``cosignatures.log`` to 10 MB and held a core
for 80 s (found by a hostile-input probe)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import cosigned
from agent.audit.cosignature import cosign
from agent.audit.cosigned import COSIGNATURES_FILE, MAX_PER_SIZE, CosignatureInbox
from agent.audit.note import SIG_PREFIX, open_checkpoint, sign_checkpoint, split_notes
from agent.audit.store import CHECKPOINTS_FILE


def _junk(note: bytes, i: int) -> bytes:
    blob = base64.b64encode(i.to_bytes(4, "big") + b"x" * 64).decode()
    return note + f"{SIG_PREFIX}w{i} {blob}\n".encode()


def test_a_flood_of_junk_cosignatures_keeps_a_few_per_checkpoint_and_logs_a_few_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    notes = [sign_checkpoint("emotion-agent/lobby-1", n, bytes([n]) * 32, key).note for n in (3, 5)]
    (tmp_path / CHECKPOINTS_FILE).write_bytes(b"".join(notes))
    inbox = CosignatureInbox(tmp_path, key.public_key())
    real = notes[1] + cosign(notes[1], "witness.test", witness, 1_800_000_000).encode()
    caplog.set_level(logging.WARNING)
    kept = [inbox.accept(_junk(notes[0], i)) for i in range(500)]
    assert kept.count(True) == MAX_PER_SIZE
    assert inbox.accept(real) is True  # another tree size still has room
    stored = split_notes((tmp_path / COSIGNATURES_FILE).read_bytes())[0]
    assert len(stored) == MAX_PER_SIZE + 1
    assert stored[-1][1] == real
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert "more like it" not in warnings[0].getMessage()


def test_the_inbox_verifies_each_checkpoint_once_not_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    notes = [sign_checkpoint("emotion-agent/lobby-1", n, bytes([n]) * 32, key).note for n in range(1, 21)]
    (tmp_path / CHECKPOINTS_FILE).write_bytes(b"".join(notes))
    inbox = CosignatureInbox(tmp_path, key.public_key())
    calls: list[int] = []
    real = cosigned.open_checkpoint

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cosigned, "open_checkpoint", counted)
    for i in range(50):
        inbox.accept(_junk(notes[4], i))
    # one per message, each of the 20 checkpoints once, each kept copy once: was 50 x 21
    assert len(calls) <= 50 + 20 + MAX_PER_SIZE, len(calls)
    later = sign_checkpoint("emotion-agent/lobby-1", 25, b"\x19" * 32, key).note
    with (tmp_path / CHECKPOINTS_FILE).open("ab") as f:
        f.write(later)
    assert inbox.accept(_junk(later, 99)) is True  # a checkpoint appended since is read


def test_a_full_file_keeps_the_newest_checkpoints_and_takes_the_next_cosignature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 4 MiB every real cosignature was refused for good, about 3 months into a device's life
    with one witness (found by review). The file is rewritten with the newest copies instead."""
    monkeypatch.setattr(cosigned, "MAX_FILE_BYTES", 8 * 1024)
    key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    inbox = CosignatureInbox(tmp_path, key.public_key())
    sizes = range(1, 61)
    for n in sizes:
        note = sign_checkpoint("emotion-agent/lobby-1", n, n.to_bytes(32, "big"), key).note
        with (tmp_path / CHECKPOINTS_FILE).open("ab") as f:
            f.write(note)
        assert inbox.accept(note + cosign(note, "witness.test", witness, 1_800_000_000 + n).encode()), n
        assert (tmp_path / COSIGNATURES_FILE).stat().st_size <= 8 * 1024
    kept = [open_checkpoint(note, key.public_key()).size
            for _, note in split_notes((tmp_path / COSIGNATURES_FILE).read_bytes())[0]]
    assert kept == sorted(kept)
    assert kept[-1] == 60
    assert len(kept) < len(sizes)
    again = CosignatureInbox(tmp_path, key.public_key())  # a restart reads the rewritten file
    assert again.accept(note + cosign(note, "witness.test", witness, 1).encode())
