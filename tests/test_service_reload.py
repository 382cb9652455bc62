"""SIGHUP reloads never publish a window twice nor reopen a file that did not change (issue 18
item 2). Before: changing k published window 1796457950 twice (complete: false with k = 2, then
complete: true with k = 3); changing camera.fps on a file reopened it and published windows 930
and 940 again under new sequence numbers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

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


def test_two_reloads_within_a_second_never_publish_overlapping_windows(tmp_path: Path) -> None:
    """The first reload ends its window at the next second, S, and the next window starts at S;
    a second reload before S closed that one as [S, S + 1) and the third window began at S
    again: two windows covered [S, S + 1)."""
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    for _ in range(32):
        service.step()
    for k in (3, 4):  # two SIGHUPs while the clip is 0.2 s further on at most
        text = path.read_text()
        path.write_text(text.replace(f"min_people: {k - 1}", f"min_people: {k}"))
        assert service.reload() is True
        service.step()
    for _ in range(40):
        service.step()
    service.close()
    stats = windows(tmp_path)
    assert [s["k"] for s in stats[:3]] == [2, 3, 4]
    assert_each_second_once(stats)


def test_a_reload_that_moves_state_dir_keeps_the_days_privacy_budget(tmp_path: Path) -> None:
    """state_dir takes effect at the next restart; the reload built the budget's accountant on
    the new folder all the same, and the same UTC day spent twice its daily_budget."""
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    dp = "  dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 1.0}\n"
    path.write_text(path.read_text().replace("min_people: 2}", "min_people: 2,\n" + dp + "}"))
    pipeline = CountingPipeline()
    service = Service(
        load_config(path), path, FakeClock(start=1_800_000_000.0),
        opener=lambda s, o, c: ScriptedSource(c, 1000, False),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    for _ in range(200):  # four 10 s windows: the day's budget (two windows) is spent
        service.step()
    assert audited_spend(tmp_path) == 1_000_000
    text = path.read_text().replace(str(tmp_path / "state"), str(tmp_path / "state2"))
    path.write_text(text.replace("min_people: 2", "min_people: 3"))  # k closes the window too
    assert service.reload() is True
    for _ in range(200):
        service.step()
    service.close()
    assert audited_spend(tmp_path) == 1_000_000
    assert not (tmp_path / "state2").exists()


def audited_spend(tmp_path: Path) -> int:
    """The epsilon (micro) that the audit log's ``window`` entries say was spent."""
    total = 0
    for segment in sorted(tmp_path.rglob("audit/segment-*.jsonl")):
        for line in segment.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("kind") == "window":
                total += int(entry["data"].get("dp_spent_micro") or 0)
    return total


def test_a_reload_reads_relative_paths_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service started in another folder (systemd starts it in /) and a config naming its
    key, output and state folder relatively: the start and the SIGHUP reload read them beside
    the config file, so the reload changes only what was edited. Before, the start looked for
    keys/device.key in the working folder and exited 2."""
    folder = tmp_path / "etc"
    path = write_config(folder, "scripted.mp4", extra=NO_GATE)
    path.write_text(path.read_text().replace(f"{folder}/", ""))
    assert "state_dir: \"state\"" in path.read_text()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    service = Service(
        load_config(path), path, FakeClock(start=1_800_000_000.0),
        opener=lambda s, o, c: ScriptedSource(c, 150, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    service.start()
    for _ in range(20):
        service.step()
    path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
    assert service.reload() is True
    for _ in range(40):
        service.step()
    service.close()
    changes = [e["data"]["keys"] for e in audit_entries(folder) if e["kind"] == "config_change"]
    assert changes == [["analytics.min_people"]]
    assert windows(folder)
    assert verify_all(folder) == []
    assert list((tmp_path / "elsewhere").iterdir()) == []


def audit_entries(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for segment in sorted(folder.rglob("audit/segment-*.jsonl"))
        for line in segment.read_text().splitlines()
    ]
