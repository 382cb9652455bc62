"""The JSON-lines output file can be rotated from outside while the agent runs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from agent.outputs.base import Message
from agent.outputs.jsonl import JsonLinesOutput


def message(n: int) -> Message:
    return Message("emotion-agent/lobby-1/stats", json.dumps({"n": n}).encode())


def numbers(path: Path) -> list[int]:
    return [json.loads(line)["payload"]["n"] for line in path.read_text().splitlines()]


def test_logrotates_move_and_create_gets_the_next_line_in_the_new_file(tmp_path: Path) -> None:
    """logrotate's default moves the file away (and may create a new one): the agent wrote on
    into the moved file forever, so the path stayed empty and the old file grew (found by
    review)."""
    path = tmp_path / "feed.jsonl"
    out = JsonLinesOutput(path)
    out.start()
    try:
        out.send(message(1))
        path.rename(tmp_path / "feed.jsonl.1")
        path.write_text("")  # `create`: logrotate makes the new, empty file itself
        out.send(message(2))
        (tmp_path / "feed.jsonl.1").rename(tmp_path / "feed.jsonl.2")
        path.rename(tmp_path / "feed.jsonl.1")  # `nocreate`: the agent makes it
        out.send(message(3))
    finally:
        out.stop()
    assert numbers(tmp_path / "feed.jsonl.2") == [1]
    assert numbers(tmp_path / "feed.jsonl.1") == [2]
    assert numbers(path) == [3]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_copytruncate_keeps_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    out = JsonLinesOutput(path)
    out.start()
    try:
        out.send(message(1))
        (tmp_path / "feed.jsonl.1").write_bytes(path.read_bytes())
        os.truncate(path, 0)
        out.send(message(2))
    finally:
        out.stop()
    assert numbers(path) == [2]  # appended at the new end, no hole of zeros before it
    assert path.read_bytes().startswith(b"{")
