"""SIGHUP reloads never publish a window twice nor reopen a file that did not change (issue 18
item 2). Before: changing k published window 1796457950 twice (complete: false with k = 2, then
complete: true with k = 3); changing camera.fps on a file reopened it and published windows 930
and 940 again under new sequence numbers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from agent.camera.base import SourceOptions
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.service import Service
from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, messages, verify_all, write_config


def build(tmp_path: Path, opened: list[ScriptedSource]) -> tuple[Service, Path]:
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)

    def opener(source: str, options: SourceOptions, clock: Clock) -> ScriptedSource:
        opened.append(ScriptedSource(clock, 150, False))
        return opened[-1]

    pipeline = CountingPipeline()
    service = Service(load_config(path), path, FakeClock(start=1_800_000_000.0), opener=opener,
                      pipeline_factory=lambda _c: pipeline)  # type: ignore[arg-type,return-value]
    return service, path


def windows(tmp_path: Path) -> list[dict[str, Any]]:
    return [m["body"] for m in messages(tmp_path, "stats")]


def assert_each_second_once(stats: list[dict[str, Any]]) -> None:
    spans = [(s["window_start"], s["window_end"]) for s in stats]
    assert len({start for start, _ in spans}) == len(spans), spans
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans


def test_changing_k_closes_the_window_at_the_reload_and_never_publishes_it_twice(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    for _ in range(32):  # 6.4 s of clip at 5 fps, in the first 10 s window
        service.step()
    path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
    assert service.reload() is True
    for _ in range(40):
        service.step()
    service.close()
    stats = windows(tmp_path)
    assert_each_second_once(stats)
    first, second = stats[0], stats[1]
    assert (first["k"], first["complete"], first["closed_by"]) == (2, False, "reload")
    assert (second["k"], second["window_start"]) == (3, first["window_end"])
    # a suppressed window publishes no frame figures (issue 13); the audit log has them all
    assert sum(audited_captured(tmp_path)) == opened[0].pos
    assert verify_all(tmp_path) == []


def audited_captured(tmp_path: Path) -> list[int]:
    """``captured`` of every ``frames`` entry in the audit log, in order."""
    out = []
    for segment in sorted(tmp_path.rglob("audit/segment-*.jsonl")):
        for line in segment.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("kind") == "frames":
                out.append(int(entry["data"]["captured"]))
    return out


def test_changing_fps_on_a_file_does_not_reopen_it(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    for _ in range(60):
        service.step()
    path.write_text(path.read_text().replace("fps: 5,", "fps: 2,"))
    assert service.reload() is True
    for _ in range(60):
        service.step()
    service.close()
    assert len(opened) == 1, "the file was reopened (it would start over and repeat its windows)"
    assert opened[0].pos > 60  # it went on from where it was
    stats = windows(tmp_path)
    assert_each_second_once(stats)
    seqs = [m["seq"] for m in messages(tmp_path, "stats")]
    assert len(seqs) == len(set(seqs))
    assert verify_all(tmp_path) == []


def test_an_alert_only_reload_keeps_the_open_window(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    for _ in range(20):
        service.step()
    path.write_text(path.read_text() + "retention: {audit_days: 400}\n")
    assert service.reload() is True
    for _ in range(40):
        service.step()
    service.close()
    stats = windows(tmp_path)
    assert_each_second_once(stats)
    assert all(s["closed_by"] is None for s in stats)
    assert stats[0]["complete"] is True


def test_a_new_file_continues_after_the_last_window(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    for _ in range(60):
        service.step()
    path.write_text(path.read_text().replace("scripted.mp4", "other.mp4"))
    assert service.reload() is True
    for _ in range(60):
        service.step()
    service.close()
    assert len(opened) == 2
    assert_each_second_once(windows(tmp_path))
