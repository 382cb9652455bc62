"""Before the agent signs or audits anything: is the state folder the one it left?

A start must not paper over lost or tampered state (issue 18): a deleted ``audit/`` or
``checkpoints.log`` would start a fresh log without a word, a log that fails verification
would be continued, and a signer state that was deleted or rolled back would reuse boot and
sequence numbers that receivers already accepted. So, when the folder shows an earlier run
(``signer-state.json`` or the spool exists, or ``audit/`` does):

- ``audit/`` must exist with its segments and ``checkpoints.log``, and verify against the
  device key, following the key rotations the log records (``emotion-agent keys rotate``;
  checkpoints signed by another key the log does not link to the device key are not counted
  against it); otherwise :class:`~agent.errors.PayloadError` (exit 2, one line) says what is
  wrong and what to do;
- the last boot (``start`` entries) and the highest sequence number (``publish`` entries) the
  log has seen used are returned as the signer's ``floor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.entries import decode_entry
from agent.audit.store import CHECKPOINTS_FILE, iter_lines, list_segments
from agent.audit.verify import verify_log
from agent.crypto.keys import kid_for
from agent.crypto.seqstore import STATE_NAME
from agent.errors import PayloadError

MARKERS = (STATE_NAME, "spool.sqlite3")
"""Files only a run leaves behind: their presence means ``audit/`` was made too."""

_OTHER_KEY = "no signature by the trusted key"


@dataclass(frozen=True, slots=True)
class StartState:
    """What the start needs from the check: the signer's floor (None on a first run), and the
    device's other keys that recorded rotations link to the current one (messages they signed
    may still wait in the spool; one of them may have signed ``state.json``)."""

    floor: tuple[int, int] | None
    linked_keys: tuple[Ed25519PublicKey, ...] = ()


def _refuse(state_dir: Path, why: str) -> PayloadError:
    return PayloadError(
        f"{state_dir}: {why}; refusing to start on lost or altered state (restore state_dir from a "
        "backup, or archive it and start afresh with a new key so receivers are not confused)"
    )


def check_state_dir(state_dir: Path, public_key: Ed25519PublicKey) -> StartState:
    audit = state_dir / "audit"
    ran_before = [name for name in MARKERS if (state_dir / name).exists()]
    if not audit.exists():
        if ran_before:
            raise _refuse(state_dir, f"audit/ is missing but {ran_before[0]} shows an earlier run")
        return StartState(floor=None)
    if not audit.is_dir():
        raise _refuse(state_dir, "audit is not a folder")
    segments = list_segments(audit)
    if not segments:
        if ran_before:
            raise _refuse(state_dir, f"audit/ holds no segment but {ran_before[0]} shows an earlier run")
        return StartState(floor=None)
    if not (audit / CHECKPOINTS_FILE).exists():
        raise _refuse(state_dir, f"audit/{CHECKPOINTS_FILE} is missing")
    result = verify_log(audit, public_key)
    problems = [p for p in result.problems if _OTHER_KEY not in p]
    foreign = len(result.problems) - len(problems)
    if foreign and not result.checkpoints:  # with or without the problems that absence makes
        raise _another_key(state_dir, public_key, segments)
    if problems:
        also = (
            f"; {foreign} of its checkpoints are signed by a key neither this one nor a recorded "
            "rotation links to (was keys.private_key changed without `emotion-agent keys rotate`?)"
            if foreign else ""
        )
        raise _refuse(state_dir, f"the audit log fails verification: {problems[0]}{also}")
    linked = tuple(k for k in result.keys if kid_for(k) != kid_for(public_key))
    return StartState(floor=_used_counters(segments), linked_keys=linked)


def _another_key(
    state_dir: Path, public_key: Ed25519PublicKey, segments: list[tuple[int, Path]]
) -> PayloadError:
    """No checkpoint of the log is signed by the configured key or one a rotation links to it:
    the key is not this device's. Said as such: the consequence ("checkpoints.log has none at
    size N: a checkpoint was deleted; restore state_dir from a backup") sent installers after a
    deletion that never happened."""
    kids = [
        str(decode_entry(line).data["kid"])
        for _first, path in segments
        for line in iter_lines(path)
        if b'"kind":"key_event"' in line and b'"event":"boot"' in line
    ]
    ran = f" (kid {kids[-1]} at its last start)" if kids else ""
    return PayloadError(
        f"{state_dir}: the audit log fails verification: no checkpoint in it is signed by this key "
        f"(kid {kid_for(public_key)}); it was written with another key{ran}. keys.private_key is "
        "not the key this device ran with: put that key back (a key is replaced with `emotion-agent "
        "keys rotate`, docs/key-rotation.md), or, if it is lost, archive state_dir and start afresh "
        "so receivers are not confused"
    )


def _used_counters(segments: list[tuple[int, Path]]) -> tuple[int, int]:
    """(last boot, highest seq) recorded in the log."""
    boot, seq = 0, 0
    for _first, path in segments:
        for line in iter_lines(path):
            if b'"kind":"start"' in line:
                boot = max(boot, int(decode_entry(line).data["boot"]))
            elif b'"kind":"segment"' in line and b'"boot":' in line:
                boot = max(boot, int(decode_entry(line).data["start"]["boot"]))
            elif b'"kind":"publish"' in line:
                seq = max(seq, int(decode_entry(line).data["seq"]))
    return boot, seq
