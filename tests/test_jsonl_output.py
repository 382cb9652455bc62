"""The JSON-lines output file can be rotated from outside while the agent runs."""

from __future__ import annotations

import json
import os
import stat
import threading
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


def test_a_fifo_in_the_files_place_is_refused_at_once(tmp_path: Path) -> None:
    """Put there after the start's checks (the check refuses one before): opening it blocked the
    loop until a reader came."""
    target = tmp_path / "stats.pipe"
    os.mkfifo(target)
    out = JsonLinesOutput(target)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            out.start()
        except OSError as exc:
            failed.append(exc)

    opener = threading.Thread(target=start, daemon=True)
    opener.start()
    opener.join(5)
    if opener.is_alive():  # free the blocked open before failing
        os.close(os.open(target, os.O_RDONLY | os.O_NONBLOCK))
        opener.join(5)
        raise AssertionError("opening the FIFO blocked")
    assert len(failed) == 1
