"""Live config reload (SIGHUP) in the field (found by review): a reload at a window's edge
publishes no window twice and leaves no second out; models that cannot load refuse the reload
before anything changed; every key a reload accepts reaches the part it configures."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agent.camera.base import SourceOptions
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.processing import default_pipeline
from agent.service import Service
from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, write_config
from tests.test_service_reload import assert_each_second_once, build, windows

T0 = 1_800_000_000.0


def scripted_service(path: Path, clock: FakeClock, frames: int, pipeline: object | None = None) -> Service:
    """The service on a scripted file of ``frames`` frames and a counting (or given) pipeline."""
    chosen = pipeline if pipeline is not None else CountingPipeline()
    return Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: ScriptedSource(c, frames, False),
        pipeline_factory=lambda _c: chosen,  # type: ignore[arg-type,return-value]
    )


def audit_entries(tmp_path: Path) -> list[dict[str, Any]]:
    out = []
    for segment in sorted((tmp_path / "state" / "audit").glob("segment-*.jsonl")):
        out += [json.loads(line) for line in segment.read_text().splitlines()]
    return out


def test_a_reload_in_the_last_second_of_a_window_does_not_publish_it_twice(tmp_path: Path) -> None:
    """The reload closes [0, 10) early at stream time 9.x (it ends at ceil(9.x) = 10, an aligned
    boundary); the new aggregator's next frame (t = 9.x + 0.2 < 10) opened [0, 10) again, and
    that window was published a second time, complete, under the new k."""
    opened: list[ScriptedSource] = []
    service, path = build(tmp_path, opened)
    service.start()
    while service._stream_now is None or service._stream_now - T0 < 9.3:
        service.step()
    assert service._stream_now - T0 < 9.9
    path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
    assert service.reload() is True
    for _ in range(60):
        service.step()
    service.close()
    stats = windows(tmp_path)
    spans = [(s["window_start"] - T0, s["window_end"] - T0, s["k"], s["closed_by"]) for s in stats]
    starts = [s["window_start"] for s in stats]
    assert len(starts) == len(set(starts)), f"a window was published twice: {spans}"
    assert_each_second_once(stats)


def test_a_reload_whose_models_cannot_load_is_refused_and_the_running_config_kept(tmp_path: Path) -> None:
    """`vision: {detector: short_range, precision: int8}` is a valid config, but the vendored
    short_range detector has no int8 variant. The pipeline was loaded only after the window was
    flushed, `config_change` audited and the running pipeline closed: the ModelError escaped
    `reload()` (and so `run()`). It is refused, and nothing changed."""
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    cfg = load_config(path)
    service = Service(
        cfg, path, FakeClock(start=T0),
        opener=lambda s, o, c: ScriptedSource(c, 300, False),
        pipeline_factory=default_pipeline,  # the real models, as `run` loads them
    )
    service.start()
    for _ in range(20):
        service.step()
    text = path.read_text()
    path.write_text(text.replace("vision: {gating: {enabled: false}}",
                                 "vision: {gating: {enabled: false}, detector: short_range, "
                                 "precision: int8}"))
    try:
        result, error = service.reload(), None
    except Exception as exc:
        result, error = None, exc
    if error is None:
        for _ in range(40):  # the agent keeps analysing with the running pipeline
            service.step()
    try:
        service.close()
        close_error = None
    except Exception as exc:
        close_error = exc
    assert error is None, f"reload raised instead of refusing: {error!r}"
    assert result is False
    assert service.cfg is cfg
    assert close_error is None, f"stopping afterwards failed: {close_error!r}"
    kinds = [(e["kind"], e["data"].get("code")) for e in audit_entries(tmp_path)]
    assert ("error", "reload_refused") in kinds
    assert ("config_change", None) not in kinds
    assert all(s["closed_by"] is None for s in windows(tmp_path))


def test_a_reload_that_raises_audit_days_keeps_the_audit_log_that_long(tmp_path: Path) -> None:
    """The reload records `policy_change` with the new `audit_days`, and the retention timer and
    the audit log now use it: they went on purging at the old 2 days, deleted the segments the
    recorded policy keeps for 400 days, and `audit verify` then failed its retention invariant."""
    from agent.audit.verify import verify_log  # noqa: PLC0415
    from agent.crypto import load_public_key  # noqa: PLC0415

    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + "retention: {audit_days: 2}\n")
    clock = FakeClock(start=T0)
    service = scripted_service(path, clock, 100)
    service.start()
    for _ in range(20):
        service.step()
    path.write_text(path.read_text().replace("audit_days: 2", "audit_days: 400"))
    assert service.reload() is True
    first = sorted((tmp_path / "state" / "audit").glob("segment-*.jsonl"))[0]
    for _ in range(4):  # four days on: the next retention runs are due
        clock.advance(86_400)
        for _ in range(5):
            service.step()
    service.close()
    purges = [e["data"]["retention_days"] for e in audit_entries(tmp_path) if e["kind"] == "purge"]
    assert purges == [], f"purged with retention_days {purges} after the policy said 400"
    assert first.exists(), "the segment holding the policy_change (audit_days: 400) was deleted"
    result = verify_log(tmp_path / "state" / "audit", load_public_key(tmp_path / "keys" / "device.pub.jwk"))
    assert result.problems == []


def test_a_privacy_flag_file_set_by_a_reload_pauses_capture(tmp_path: Path) -> None:
    """`policy.privacy_mode.flag_file` added by a reload is polled from then on (it was read only
    when the Service was built: an installer's privacy switch did nothing until a restart)."""
    flag = tmp_path / "privacy.flag"
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    clock = FakeClock(start=T0)
    pipeline = CountingPipeline()
    service = scripted_service(path, clock, 1000, pipeline=pipeline)
    service.start()
    for _ in range(10):
        service.step()
    path.write_text(path.read_text() + f'policy: {{privacy_mode: {{flag_file: "{flag}"}}}}\n')
    assert service.reload() is True
    assert service.cfg.policy.privacy_mode.flag_file == flag
    flag.touch()
    for _ in range(5):
        clock.advance(1.0)
        service.step()
    seen = pipeline.frames
    for _ in range(10):
        clock.advance(1.0)
        service.step()
    paused, analysed = service.privacy.paused, pipeline.frames - seen
    service.close()
    assert paused, "the flag file named by the reload exists, but privacy mode is off"
    assert analysed == 0, f"{analysed} frame(s) analysed while the privacy flag file existed"


def test_every_reloaded_key_that_is_not_restart_only_reaches_the_running_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys a reload accepts and records in `config_change` reach the parts built once at start:
    the period that holds face-dependent health figures, the camera's reconnect back-off. The
    audit log's checkpoint settings are restart-only (a segment records them at its start): the
    reload says so and keeps the running value, as for `mqtt`."""
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    service = scripted_service(path, FakeClock(start=T0), 1000)
    service.start()
    for _ in range(10):
        service.step()
    text = path.read_text().replace("min_people: 2}", "min_people: 2, health_period_seconds: 86400}")
    text = text.replace("realtime: false}", "realtime: false, reconnect_max_seconds: 5}")
    path.write_text(text + "audit: {checkpoint_every_entries: 7}\n")
    assert service.reload() is True
    stale = {
        "analytics.health_period_seconds": (service.health_periods.period_s, 86400),
        "camera.reconnect_max_seconds": (service.feed.max_backoff, 5),
    }
    running = service.audit.settings.checkpoint_every_entries
    checkpoints = (running, service.cfg.audit.checkpoint_every_entries)
    service.close()
    assert {k: v for k, v in stale.items() if v[0] != v[1]} == {}
    assert checkpoints == (100, 100)
    assert "take effect at the next restart: audit.checkpoint_every_entries" in caplog.text


def test_a_reload_just_after_a_window_end_leaves_no_second_uncovered(tmp_path: Path) -> None:
    """Live camera (here: unplugged, so every window still reports its frame figures). The loop's
    last poll was before 9.5 s (from there on it waits for the window's pace point, 10.5 s);
    the reload comes at 10.3 s, before any poll rolled [0, 10) over.
    The flush closes [0, 10) complete; the next window starts at 10 (it started at
    ceil(10.3) = 11, and second [10, 11) was in no window)."""
    def opener(source: str, options: SourceOptions, clock: Clock) -> ScriptedSource:
        raise OSError("no camera on /dev/video0")

    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    clock = FakeClock(start=T0)
    service = Service(
        load_config(path), path, clock, opener=opener,
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    service.start()
    while clock.time() - T0 < 9.3:
        service.step()
    assert clock.time() - T0 < 10.0
    assert service.feed.live
    clock.advance(10.3 - (clock.time() - T0))  # a slow loop turn: the window ended meanwhile
    path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
    assert service.reload() is True
    while clock.time() - T0 < 35:
        service.step()
    service.close()
    stats = windows(tmp_path)
    spans = [(s["window_start"] - T0, s["window_end"] - T0) for s in stats]
    assert all(a[1] == b[0] for a, b in pairwise(spans)), f"a second is in no window: {spans}"


def test_a_reload_that_drops_the_flag_file_releases_what_the_file_held(tmp_path: Path) -> None:
    """The flag file held privacy mode on; a reload that no longer names a flag file releases
    that hold (only the file's: privacy mode is on while any of its sources says so)."""
    flag = tmp_path / "privacy.flag"
    flag.touch()
    extra = NO_GATE + f'policy: {{privacy_mode: {{flag_file: "{flag}"}}}}\n'
    path = write_config(tmp_path, "scripted.mp4", extra=extra)
    clock = FakeClock(start=T0)
    service = scripted_service(path, clock, 1000)
    service.start()
    for _ in range(5):
        clock.advance(1.0)
        service.step()
    held = service.privacy.paused
    path.write_text(path.read_text().replace(f'policy: {{privacy_mode: {{flag_file: "{flag}"}}}}\n', ""))
    assert service.reload() is True
    for _ in range(5):
        clock.advance(1.0)
        service.step()
    released = not service.privacy.paused
    service.close()
    assert held
    assert released


@pytest.mark.parametrize(("before", "after", "dropped"), [(1, 7, 0), (7, 1, 1)])
def test_a_reload_that_changes_spool_days_ages_the_unsent_messages_by_the_new_limit(
    tmp_path: Path, before: int, after: int, dropped: int
) -> None:
    """`retention.spool_days` is not restart-only: the reload records it in its `policy_change`,
    `policy explain` prints it, and the spool must follow. It kept the limit it was built with
    until the next restart: raised from 1 to 7 days before a long broker outage, unsent
    messages were still dropped after 1 day; lowered from 7 to 1, they were kept 7 days."""
    from agent.outputs.base import Message  # noqa: PLC0415
    from agent.transport.mqtt import MqttOutput  # noqa: PLC0415

    extra = NO_GATE + f"retention: {{spool_days: {before}}}\n"
    path = write_config(tmp_path, "scripted.mp4", extra=extra)
    path.write_text(path.read_text().replace("mqtt: {enabled: false}", "mqtt: {host: 127.0.0.1, port: 1}"))
    clock = FakeClock(start=T0)
    service = scripted_service(path, clock, 100)
    mqtt = next(o for o in service.outputs if isinstance(o, MqttOutput))  # never started: no broker
    mqtt.send(Message(f"{mqtt.base_topic}/stats", b"{}"))
    path.write_text(path.read_text().replace(f"spool_days: {before}", f"spool_days: {after}"))
    assert service.reload() is True
    clock.advance(2 * 86_400)  # the first message is 2 days old, unsent
    mqtt.send(Message(f"{mqtt.base_topic}/stats", b"{}"))  # a put applies the spool's limits
    aged = mqtt.health().dropped.get("retention", 0)
    service.close()
    assert aged == dropped, f"spool_days {before} -> {after}: {aged} message(s) 2 days old dropped"
