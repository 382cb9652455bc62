"""Reopening a tampered log refuses instead of continuing it (issue 18 item 6): the device
attests each head in state.json before writing the line, so an appended, removed or replaced
entry is told from what a crash leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.entries import encode_entry
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.errors import PayloadError

from .conftest import OpenLog
from .helpers import fill, frames


def last_segment(tmp_path: Path) -> Path:
    return sorted((tmp_path / "audit").glob("segment-*.jsonl"))[-1]


@pytest.fixture
def crashed(open_log: OpenLog, clock: FakeClock, tmp_path: Path) -> Path:
    """A log whose writer was killed: entries after the last checkpoint are unsigned."""
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    fill(log, clock, 4)
    log.checkpoint()
    log.append("frames", frames())
    log._fd = -1
    return last_segment(tmp_path)


def test_a_forged_entry_after_the_last_checkpoint_is_not_signed_into_the_log(
    crashed: Path, open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    size = len(crashed.read_bytes().splitlines())
    forged = encode_entry(size, 1_700_000_900_000, "privacy_mode", {"mode": "off", "source": "mqtt"})
    with crashed.open("ab") as f:
        f.write(forged.line + b"\n")
    problems = verify_log(tmp_path / "audit", key.public_key()).problems  # no checkpoint signs it,
    assert problems == [  # but state.json, which the device signs before every append, does not attest it
        f"entries {size}..{size} were not written by this agent (state.json, signed by the device, "
        f"attests {size}): an entry was appended"
    ]
    with pytest.raises(PayloadError, match=rf"entries {size}\.\.{size} were not written by this agent"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    notes = (tmp_path / "audit/checkpoints.log").read_bytes()
    assert notes.count(b"\n\n") == 1  # no new checkpoint signed the forged entry


def test_a_truncated_log_is_refused_not_rebuilt_onto_a_fork(
    crashed: Path, open_log: OpenLog
) -> None:
    data = crashed.read_bytes()
    crashed.write_bytes(data[: len(data) * 2 // 3])  # cut mid-line, several entries gone
    with pytest.raises(PayloadError, match="truncated"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)


def test_a_replaced_entry_is_refused(crashed: Path, open_log: OpenLog) -> None:
    lines = crashed.read_bytes().splitlines()
    last = json.loads(lines[-1])
    lines[-1] = encode_entry(last["i"], last["ts"], "frames", frames(captured=301, discarded=5)).line
    crashed.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(PayloadError, match="an entry was altered"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)


def test_an_edited_or_deleted_state_file_is_refused(crashed: Path, open_log: OpenLog, tmp_path: Path) -> None:
    state_path = tmp_path / "audit/state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(state | {"size": state["size"] + 1}))
    with pytest.raises(PayloadError, match="signature does not verify"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    state_path.unlink()
    with pytest.raises(PayloadError, match=r"state\.json is missing"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)


def test_a_deeply_nested_state_file_is_refused(crashed: Path, open_log: OpenLog, tmp_path: Path) -> None:
    (tmp_path / "audit/state.json").write_text("[" * 100_000)  # RecursionError was a traceback
    with pytest.raises(PayloadError, match=r"state\.json is missing or unreadable"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)


def test_an_unsigned_state_is_accepted_only_when_checkpoints_cover_every_entry(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path
) -> None:
    """A log from before states were signed, after a clean stop, still opens."""
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    fill(log, clock, 2)
    log.close()
    state_path = tmp_path / "audit/state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({k: state[k] for k in ("size", "edge", "segment", "segment_count")}))
    open_log(checkpoint_every_entries=1000, segment_max_entries=1000).close()
    state_path.write_text(json.dumps({k: state[k] for k in ("size", "edge", "segment", "segment_count")}))
    size = len(last_segment(tmp_path).read_bytes().splitlines()) + int(last_segment(tmp_path).name[8:20])
    with last_segment(tmp_path).open("ab") as f:
        f.write(encode_entry(size, 1_700_000_900_000, "frames", frames()).line + b"\n")
    with pytest.raises(PayloadError, match="unsigned"):
        open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
