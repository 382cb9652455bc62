"""`emotion-agent run` on a state folder that was tampered with or lost parts (issue 18 item
6): exit 2 with one line, or, for a lost signer state, numbers that continue after the audited
ones. Before: a truncated log was "rebuilt" onto a permanent fork, a deleted checkpoints.log or
audit/ started afresh without a word, a deleted signer state reused boot 1 / seq 1, and a forged
entry appended after the last checkpoint was signed into the log at the next start."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.audit.entries import encode_entry
from agent.crypto import generate_keypair

ROOT = Path(__file__).resolve().parent.parent


def run(folder: Path) -> subprocess.CompletedProcess[str]:
    """The agent of this checkout (not an installed one: the run starts in ``folder``)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "--log-level", "WARNING", "run", "-c", str(folder / "agent.yaml")],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, sample_clip: Path) -> Path:
    folder = tmp_path_factory.mktemp("first")
    generate_keypair(folder / "keys")
    (folder / "agent.yaml").write_text(f"""schema_version: 1
device_id: state-1
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{sample_clip}", fps: 5, loop: false, realtime: false}}
analytics: {{window_seconds: 10, min_people: 2}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "out.jsonl"}}
keys: {{private_key: "keys/device.key"}}
state_dir: "state"
""")
    proc = run(folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def copy(first_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    shutil.copytree(first_run, folder)
    return folder


def last_segment(folder: Path) -> Path:
    return sorted((folder / "state/audit").glob("segment-*.jsonl"))[-1]


def truncate(folder: Path) -> None:
    seg = last_segment(folder)
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])


def forge(folder: Path) -> None:
    seg = last_segment(folder)
    lines = seg.read_bytes().splitlines()
    index = json.loads(lines[-1])["i"] + 1
    fields = {"mode": "off", "source": "mqtt"}
    entry = encode_entry(index, json.loads(lines[-1])["ts"] + 1, "privacy_mode", fields)
    with seg.open("ab") as f:
        f.write(entry.line + b"\n")


def signer_state_folder(folder: Path) -> None:
    (folder / "state/signer-state.json").unlink()
    (folder / "state/signer-state.json").mkdir()


def foreign_spool(folder: Path) -> None:
    """MQTT on, and a spool.sqlite3 whose table is not the agent's."""
    config = folder / "agent.yaml"
    config.write_text(config.read_text().replace(
        "mqtt: {enabled: false}", "mqtt: {host: 127.0.0.1, port: 1, commands: {enabled: false}}"
    ))
    with sqlite3.connect(folder / "state/spool.sqlite3") as db:
        db.execute("CREATE TABLE spool (x)")
    db.close()


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated log": (truncate, "truncated"),
    "deleted checkpoints.log": (
        lambda f: (f / "state/audit/checkpoints.log").unlink(), "checkpoints.log is missing"
    ),
    "deleted audit folder": (lambda f: shutil.rmtree(f / "state/audit"), "audit/ is missing"),
    "forged entry after the last checkpoint": (forge, "not written by this agent"),
    "signer state is a folder": (signer_state_folder, "signer-state.json: signer state is unreadable"),
    "spool of another schema": (foreign_spool, "spool.sqlite3: not an offline spool this agent wrote"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_altered_state_refuses_the_start_with_one_line(first_run: Path, tmp_path: Path, case: str) -> None:
    folder = copy(first_run, tmp_path)
    tamper, expected = CASES[case]
    tamper(folder)
    before = sorted(p.name for p in (folder / "state").rglob("*"))
    proc = run(folder)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert proc.stderr.startswith("emotion-agent: error:")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    if case not in ("deleted audit folder", "spool of another schema"):  # the spool opens after the log
        assert sorted(p.name for p in (folder / "state").rglob("*")) == before  # nothing new written


@pytest.mark.slow
def test_a_deleted_signer_state_continues_after_the_audited_numbers(first_run: Path, tmp_path: Path) -> None:
    folder = copy(first_run, tmp_path)
    seqs = [json.loads(line)["payload"]["seq"] for line in (folder / "out.jsonl").read_text().splitlines()]
    (folder / "state/signer-state.json").unlink()
    proc = run(folder)
    assert proc.returncode == 0, proc.stderr
    assert "signer-state.json was missing, behind the audit log" in proc.stderr
    lines = (folder / "out.jsonl").read_text().splitlines()[len(seqs):]
    envelopes = [json.loads(line)["payload"] for line in lines]
    assert {e["boot"] for e in envelopes} == {2}
    assert min(e["seq"] for e in envelopes) > max(seqs)
