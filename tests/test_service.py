"""The running agent: windows from a real clip, camera failures, reloads, nothing identifying out."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceInfo, SourceOptions
from agent.clock import Clock, FakeClock
from agent.config import AgentConfig, load_config
from agent.crypto import Verifier, generate_keypair, load_public_key, verify_stream
from agent.errors import CameraLost
from agent.frame import Frame
from agent.service import Service
from agent.vision.observation import FaceObservation

ROOT = Path(__file__).resolve().parent.parent


NO_GATE = "vision: {gating: {enabled: false}}\n"
"""For doubles that count every frame: the change gate would skip a static scripted scene."""


def write_config(tmp: Path, source: str, extra: str = "", window: int = 10, k: int = 2) -> Path:
    keys = tmp / "keys"
    if not (keys / "device.key").exists():
        generate_keypair(keys)
    path = tmp / "agent.yaml"
    path.write_text(
        f"""schema_version: 1
device_id: test-1
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: "{source}", fps: 5, loop: false, realtime: false}}
analytics: {{window_seconds: {window}, min_people: {k}}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "{tmp / 'out.jsonl'}"}}
keys: {{private_key: "{keys / 'device.key'}"}}
state_dir: "{tmp / 'state'}"
{extra}"""
    )
    return path


def messages(tmp: Path, suffix: str) -> list[dict[str, Any]]:
    lines = (tmp / "out.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    return [m["payload"] for m in found if m["topic"].endswith("/" + suffix)]


def verify_all(tmp: Path) -> list[str]:
    verifier = Verifier([load_public_key(tmp / "keys" / "device.pub.jwk")], max_skew_s=10**9)
    with (tmp / "out.jsonl").open() as f:
        return [f"line {n}: {r.reason}" for n, r in verify_stream(f, verifier) if not r.ok or r.gaps]


def json_keys(value: Any) -> set[str]:
    """Every object key in a JSON document, at any depth."""
    if isinstance(value, dict):
        return set(value).union(*(json_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(json_keys(v) for v in value))
    return set()


# --- a real clip through the real models ------------------------------------------------------


@pytest.mark.slow
def test_replayed_clip_gives_one_vote_per_person_per_window(tmp_path: Path, sample_clip: Path) -> None:
    """0-10 s: one person (below k=2, suppressed); 10-20 s: the six-person group, counted once each."""
    cfg = load_config(write_config(tmp_path, str(sample_clip)))
    clock = FakeClock(start=1_800_000_000.0)  # a multiple of 10 s: clip time 0 opens a window
    code = Service(cfg, clock=clock).run()
    assert code == 0
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert [s["window_start"] - 1_800_000_000 for s in stats] == [0, 10]
    first, second = stats
    assert first["suppressed"] == "below_k"
    assert first["people"] is None
    assert first["votes"] is None
    assert second["suppressed"] is None
    assert second["people"] == 6
    assert sum(second["votes"].values()) <= 6
    assert second["frames"]["analysed"] == 50
    assert verify_all(tmp_path) == []


# --- honest doubles for the camera and the vision stage -----------------------------------------


class CountingPipeline:
    """Stands in for the models: one fixed face per frame, and proof that frames arrive leased."""

    labels = ("happy", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self) -> None:
        self.frames = 0

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[FaceObservation]:
        assert pixels.any(), "frames must arrive with their pixels (zeroed only after analysis)"
        self.frames += 1
        return []

    def close(self) -> None:
        pass


class ScriptedSource:
    """A file-like source: ``frames`` frames, then it raises (``fail``) or ends."""

    key: ClassVar[str] = "replay"

    def __init__(self, clock: Clock, frames: int, fail: bool) -> None:
        self.clock, self.left, self.fail, self.pos = clock, frames, fail, 0
        self.closed = False

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("replay", "scripted", 5.0, 64, 36, live=False)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.left == 0:
            if self.fail:
                raise CameraLost("scripted camera unplugged")
            return None
        self.left -= 1
        self.pos += 1
        pixels = np.full((36, 64, 3), 120, dtype=np.uint8)
        return Frame(pixels, self.pos, self.clock.monotonic(), self.clock.time(), source_time=self.pos / 5)

    def close(self) -> None:
        self.closed = True


def scripted_service(tmp: Path, frames: int, start: float = 1_800_000_000.0) -> tuple[Service, Path]:
    """A service over ``frames`` scripted frames (no gate), its clock at ``start``; and its config."""
    path = write_config(tmp, "scripted.mp4", extra=NO_GATE)
    service = Service(
        load_config(path), path, FakeClock(start=start),
        opener=lambda s, o, c: ScriptedSource(c, frames, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    return service, path


def test_a_camera_that_dies_is_reopened_and_the_service_goes_on(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    scripts: Iterator[tuple[int, bool]] = iter([(20, True), (30, False)])
    opened: list[ScriptedSource] = []

    def opener(source: str, options: SourceOptions, clock_: Clock) -> ScriptedSource:
        frames, fail = next(scripts)
        opened.append(ScriptedSource(clock_, frames, fail))
        return opened[-1]

    pipeline = CountingPipeline()
    cfg = load_config(write_config(tmp_path, "scripted.mp4", extra=NO_GATE))
    service = Service(cfg, clock=clock, opener=opener, pipeline_factory=lambda _c: pipeline)  # type: ignore[arg-type,return-value]
    assert service.run() == 0
    assert pipeline.frames == 50
    assert len(opened) == 2
    assert opened[0].closed
    audit = (tmp_path / "state" / "audit").glob("segment-*.jsonl")
    entries = [json.loads(line) for p in audit for line in p.read_text().splitlines()]
    errors = [e["data"] for e in entries if e["kind"] == "error"]
    assert any(e["code"] == "camera_failed" and "unplugged" in e["message"] for e in errors)
    health = [m["body"] for m in messages(tmp_path, "health")]
    assert health[-1]["camera_failures"] == 1
    privacy = [m["body"] for m in messages(tmp_path, "privacy_mode")]
    assert [(b["state"], b["changed_by"]) for b in privacy] == [("OFF", "start")]  # announced once
    assert verify_all(tmp_path) == []


def test_the_privacy_message_names_why_in_the_documented_words_while_capturing_too(tmp_path: Path) -> None:
    """An open camera was announced as ``"reason": null``; docs/mqtt.md and a consumer's switch
    (Node-RED, an automation) expect ``"active"`` (found by an integrator's trial)."""
    service, _ = scripted_service(tmp_path, 10)
    assert service.run() == 0
    assert [m["body"] for m in messages(tmp_path, "privacy")] == [{"capturing": True, "reason": "active"}]


@pytest.mark.parametrize(("start", "first_complete"), [(1_800_000_003.0, False), (1_800_000_000.0, True)])
def test_the_first_window_of_a_run_that_began_inside_it_is_a_part(
    tmp_path: Path, start: float, first_complete: bool
) -> None:
    """A run started 3 s into a 10 s window published it as complete (found by an integrator's
    trial: a restart's 7 s replaced, under the same ``window_start``, the stopped run's part)."""
    service, _ = scripted_service(tmp_path, 110, start)
    assert service.run() == 0
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert [(b["window_start"], b["complete"]) for b in stats[:2]] == [
        (1_800_000_000, first_complete), (1_800_000_010, True)
    ]


def test_a_reload_right_after_the_start_keeps_the_first_window_a_part(tmp_path: Path) -> None:
    """A reload before any window opened built a new aggregator that did not know where the
    run began: its first window was complete again (found by review)."""
    service, path = scripted_service(tmp_path, 110, 1_800_000_003.0)
    service.start()
    try:
        path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
        assert service.reload()
        for _ in range(200):
            service.step()
    finally:
        service.close()
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert (stats[0]["window_start"], stats[0]["complete"]) == (1_800_000_000, False)


def test_reload_refuses_a_bad_config_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = write_config(tmp_path, "scripted.mp4")
    cfg = load_config(path)
    clock = FakeClock()
    service = Service(
        cfg,
        path,
        clock,
        opener=lambda s, o, c: ScriptedSource(c, 0, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    path.write_text(path.read_text().replace("min_people: 2", "min_people: many"))
    assert service.reload() is False
    assert service.cfg is cfg
    path.write_text(path.read_text().replace("min_people: many", "min_people: 3"))
    assert service.reload() is True
    assert service.cfg.analytics.min_people == 3
    assert service.aggregator.k == 3
    service.close()
    entries = [
        json.loads(line)
        for p in (tmp_path / "state" / "audit").glob("segment-*.jsonl")
        for line in p.read_text().splitlines()
    ]
    kinds = [(e["kind"], e["data"].get("code")) for e in entries]
    assert ("error", "reload_refused") in kinds
    change = next(e["data"] for e in entries if e["kind"] == "config_change")
    assert change["keys"] == ["analytics.min_people"]


def _unusable(tmp: Path, kind: str) -> Path:
    """A camera.source an installer might mistype or leave broken."""
    path = tmp / f"unusable-{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a video\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    return path  # "missing": never created


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "folder", "fifo"])
def test_reload_to_an_unusable_file_keeps_the_running_source(tmp_path: Path, kind: str) -> None:
    """Issue 18: a reload naming a file that cannot be used is refused like any bad config; the
    agent keeps its source and config instead of stopping with exit 2."""
    good = tmp_path / "lobby.png"
    cv2.imwrite(str(good), np.full((120, 160, 3), 90, np.uint8))
    path = write_config(tmp_path, str(good))
    cfg = load_config(path)
    service = Service(cfg, path, FakeClock(), pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]
    bad = _unusable(tmp_path, kind)
    path.write_text(path.read_text().replace(str(good), str(bad)))
    assert service.reload() is False
    assert service.cfg is cfg
    assert service.feed.source == str(good)
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.full((120, 160, 3), 60, np.uint8))
    path.write_text(path.read_text().replace(str(bad), str(other)))
    assert service.reload() is True
    assert service.feed.source == str(other)
    service.close()
    refused = [
        json.loads(line)["data"]
        for p in (tmp_path / "state" / "audit").glob("segment-*.jsonl")
        for line in p.read_text().splitlines()
        if '"reload_refused"' in line
    ]
    assert len(refused) == 1
    assert refused[0]["message"].startswith(f"camera.source {bad}")


def test_policy_refusal_stops_the_start(tmp_path: Path) -> None:
    path = write_config(tmp_path, "x.mp4")
    text = path.read_text()
    text = text.replace("jurisdiction: US, context: retail", "jurisdiction: DE, context: workplace")
    path.write_text(text)
    cfg: AgentConfig = load_config(path)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "Art. 5(1)(f)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cfg.site.context == "workplace"


# --- the real process: signals, logs, nothing identifying --------------------------------------


@pytest.mark.slow
def test_sighup_with_a_bad_config_keeps_running_and_sigterm_flushes(
    tmp_path: Path, sample_clip: Path
) -> None:
    path = write_config(tmp_path, str(sample_clip))
    path.write_text(path.read_text().replace("loop: false, realtime: false", "loop: true, realtime: true"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "--log-level", "DEBUG", "run", "-c", str(path)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        out = tmp_path / "out.jsonl"
        while not (out.exists() and "/privacy" in out.read_text()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        path.write_text(path.read_text().replace("min_people: 2", "min_people: 0"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert proc.poll() is None, "a bad config on SIGHUP must not stop the agent"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reload refused, keeping the running config" in err
    assert "analytics.min_people" in err
    stats = messages(tmp_path, "stats")
    assert stats, "SIGTERM must flush the open window"
    assert stats[-1]["body"]["complete"] is False
    assert verify_all(tmp_path) == []
    # Nothing identifying in what leaves the process: no boxes, no keypoints, no track ids.
    published = out.read_text()
    fields = set().union(*(json_keys(json.loads(line)) for line in published.splitlines()))
    for word in ("box", "keypoint", "track", "probs"):
        # Field names, not substrings: a base64 signature may spell "box" by chance.
        assert not {f for f in fields if word in f.lower()}, f"{word} is a published field"
        assert not re.search(rf"\b{word}s?\b[=:]", err), f"{word} appears in the logs"
    assert not re.search(r"\[\s*\d+(?:\.\d+)?\s*(?:,\s*\d+(?:\.\d+)?\s*){3,}\]", err + published)


def test_privacy_flag_keeps_the_camera_closed_until_it_is_removed(tmp_path: Path) -> None:
    """Privacy mode closes the source (nothing is captured), and each change is audited."""
    flag = tmp_path / "privacy.flag"
    flag.touch()
    extra = f'policy: {{privacy_mode: {{flag_file: "{flag}"}}}}\n'
    path = write_config(tmp_path, "scripted.mp4", extra=extra)
    clock = FakeClock(start=1_800_000_000.0)
    opened: list[ScriptedSource] = []

    def opener(source: str, options: SourceOptions, clock_: Clock) -> ScriptedSource:
        opened.append(ScriptedSource(clock_, 1000, False))
        return opened[-1]

    pipeline = CountingPipeline()
    service = Service(load_config(path), clock=clock, opener=opener, pipeline_factory=lambda _c: pipeline)  # type: ignore[arg-type,return-value]
    service.start()
    for _ in range(20):
        service.step()
        clock.advance(1.0)
    assert opened == [], "no source may be opened while privacy mode is on"
    assert pipeline.frames == 0
    flag.unlink()
    for _ in range(5):
        clock.advance(1.0)
        service.step()
    assert len(opened) == 1
    assert pipeline.frames > 0
    assert not service.stage.gate.is_zero()  # the change gate's reference thumbnail
    flag.touch()
    for _ in range(3):
        clock.advance(1.0)
        service.step()
    assert opened[0].closed, "privacy mode must close the camera, not just ignore its frames"
    assert service.stage.gate.is_zero(), "nothing derived from the last frames may outlive the pause"
    frames_then = pipeline.frames
    for _ in range(5):
        clock.advance(1.0)
        service.step()
    assert pipeline.frames == frames_then
    service.close()
    entries = [
        json.loads(line)
        for p in (tmp_path / "state" / "audit").glob("segment-*.jsonl")
        for line in p.read_text().splitlines()
    ]
    modes = [e["data"]["mode"] for e in entries if e["kind"] == "privacy_mode"]
    assert modes == ["on", "off", "on"]
    states = [m["body"]["state"] for m in messages(tmp_path, "privacy_mode")]
    assert states == ["ON", "OFF", "ON"]


class AngryCrowd:
    """Five well-separated faces, all clearly angry: enough people (k = 2) for an alert rule.
    Their heads sway by 0.2 face widths, as people's do (still faces are taken for posters)."""

    labels = ("angry", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self) -> None:
        self.calls = 0

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[FaceObservation]:
        from agent.vision.observation import Quality  # noqa: PLC0415

        self.calls += 1
        dx = 0.02 * math.sin(self.calls * math.pi / 10)
        quality = Quality(face_px=80.0, sharpness=100.0, brightness=120.0, yaw_degrees=0.0)
        return [
            FaceObservation(
                box=(0.02 + i * 0.19 + dx, 0.3, 0.1, 0.18),
                score=0.9,
                keypoints=((0.05 + i * 0.19, 0.35),) * 6,
                quality=quality,
                probs=(("angry", 0.9), ("neutral", 0.1)),
            )
            for i in range(5)
        ]

    def close(self) -> None:
        pass


def test_an_alert_raised_before_a_reload_that_removes_its_rule_is_cleared(tmp_path: Path) -> None:
    rule = (
        "analytics:\n  window_seconds: 10\n  min_people: 2\n  alerts:\n"
        "    - {name: tension, metric: share, labels: [angry], comparison: above, threshold: 0.4,"
        " min_people: 2, windows_in_row: 1}\n"
    )
    path = write_config(tmp_path, "scripted.mp4", extra="")
    text = path.read_text().replace("analytics: {window_seconds: 10, min_people: 2}\n", "")
    path.write_text(text + rule)
    clock = FakeClock(start=1_800_000_000.0)
    service = Service(
        load_config(path),
        path,
        clock,
        opener=lambda s, o, c: ScriptedSource(c, 200, False),
        pipeline_factory=lambda _c: AngryCrowd(),  # type: ignore[arg-type,return-value]
    )
    service.start()
    for _ in range(60):  # 12 s of clip at 5 fps: the first 10 s window closes
        service.step()
    alerts = [m["body"] for m in messages(tmp_path, "alert")]
    assert [(a["rule"], a["state"]) for a in alerts] == [("tension", "raised")]
    assert alerts[0]["value"] == 1000
    path.write_text(text)  # the rule is gone
    assert service.reload() is True
    service.close()
    alerts = [m["body"] for m in messages(tmp_path, "alert")]
    assert [(a["rule"], a["state"]) for a in alerts][-1] == ("tension", "cleared")
    assert verify_all(tmp_path) == []


@pytest.mark.slow
def test_a_reload_that_changes_the_rules_and_the_window_updates_home_assistants_discovery(
    tmp_path: Path,
) -> None:
    """Before: the discovery was fixed at start, so after the reload the removed rule kept its
    entity and its retained state, the new rule (whose `alert/fresh` goes out at once) had no
    entity, expire_after stayed 3 x the old 10 s window, and Home Assistant's own restart
    (birth) got that stale config again."""
    from tests.mosquitto import Broker, Subscriber  # noqa: PLC0415 - only this test needs mosquitto

    rule = ("    - {{name: {name}, metric: share, labels: [angry], comparison: above, threshold: 0.4,"
            " min_people: 2, windows_in_row: 1}}\n")
    head = "analytics:\n  window_seconds: {w}\n  min_people: 2\n  alerts:\n"
    topic = "homeassistant/device/emotion_agent_test-1/config"
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        mqtt = (f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_min_seconds: 1,"
                " reconnect_max_seconds: 1}\n")
        path = write_config(tmp_path, "scripted.mp4")
        base = (path.read_text().replace("analytics: {window_seconds: 10, min_people: 2}\n", "")
                .replace("mqtt: {enabled: false}\n", mqtt))
        path.write_text(base + head.format(w=10) + rule.format(name="tension"))
        service = Service(
            load_config(path), path, FakeClock(start=1_800_000_000.0),
            opener=lambda s, o, c: ScriptedSource(c, 200, False),
            pipeline_factory=lambda _c: AngryCrowd(),  # type: ignore[arg-type,return-value]
        )
        with Subscriber(broker, [topic]) as sub:
            service.start()
            try:
                for _ in range(60):  # the first 10 s window closes: `tension` is raised
                    service.step()
                assert [m["body"]["state"] for m in messages(tmp_path, "alert")] == ["raised"]
                sub.wait_for(topic, 1)
                path.write_text(base + head.format(w=60) + rule.format(name="fresh"))
                assert service.reload() is True
                sub.wait_for(topic, 2)  # sent by the reload itself
                sub.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
                configs = sub.wait_for(topic, 3, timeout=10)  # the birth: 0-5 s of jitter
            finally:
                service.close()
        with Subscriber(broker, ["emotion-agent/test-1/alert/#"], client_id="late") as late:
            time.sleep(0.5)  # retained messages follow the SUBACK at once
            kept = {m.topic.rsplit("/", 1)[1] for m in late.messages if m.retain and m.payload}
    for config in configs[1:]:
        cmps = json.loads(config.payload)["cmps"]
        # {"p": ...} alone is how Home Assistant 2024.11+ removes a component of a device message
        assert cmps["alert_tension"] == {"p": "binary_sensor"}, "the removed rule is not removed"
        assert "alert_fresh" in cmps, "the rule added by the reload has no entity"
        assert cmps["people"]["expire_after"] == 3 * 60, "expire_after is still 3 x the old window"
    assert kept == {"fresh"}, "the removed rule's state is still retained"
    assert [m["body"]["state"] for m in messages(tmp_path, "alert")] == ["raised", "cleared"]


# --- vision.gating in the service: the same windows for less CPU ----------------------------------


def run_clip(tmp: Path, clip: Path, extra: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(stats bodies, the vision stage's totals) of the demo clip through the real models.

    The totals are read from the stage: the health topic publishes them once an hour only
    (they grow with the number of faces), and this clip lasts 20 s."""
    cfg = load_config(write_config(tmp, str(clip), extra=extra))
    service = Service(cfg, clock=FakeClock(start=1_800_000_000.0))
    assert service.run() == 0
    assert verify_all(tmp) == []
    c = service.stage.counters
    totals = {"detector_skipped": c.detector_skipped, "budget_dropped": c.budget_dropped}
    return [m["body"] for m in messages(tmp, "stats")], totals


@pytest.mark.slow
def test_gating_skips_the_detector_in_the_empty_lobby_and_changes_no_window(
    tmp_path: Path, sample_clip: Path
) -> None:
    """The default (gate on) against the plain pipeline on the demo clip: every published
    figure but frame lifetimes is equal, and the empty stretches cost almost no detector call."""
    gated, gated_health = run_clip(tmp_path / "gated", sample_clip)
    plain, plain_health = run_clip(
        tmp_path / "plain", sample_clip, "vision: {gating: {enabled: false, emotion_every_frames: 1}}\n"
    )

    def figures(body: dict[str, Any]) -> dict[str, Any]:
        frames = {k: v for k, v in (body["frames"] or {}).items() if not k.startswith("lifetime")}
        return {**{k: v for k, v in body.items() if k not in ("frames", "seq")}, "frames": frames}

    assert [figures(b) for b in gated] == [figures(b) for b in plain]
    assert gated[1]["people"] == 6
    assert plain_health["detector_skipped"] == 0
    # 0-5 s and 16-20 s are empty and static: at 5 fps about 40 frames, a refresh every 5 s
    assert gated_health["detector_skipped"] >= 30
    assert gated_health["budget_dropped"] == plain_health["budget_dropped"] == 0


class BusyPipeline(CountingPipeline):
    """Costs 20 ms of CPU per frame, as a slow detector on a small board would."""

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[FaceObservation]:
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        return super().analyze(pixels, schedule, frame)


def test_a_cpu_budget_drops_frames_and_counts_them(tmp_path: Path) -> None:
    """0.01 cores for 20 ms frames: one frame in 2 s of video is analysed, the rest are dropped,
    zeroed unseen, and counted in the window and on the health topic."""
    pipeline = BusyPipeline()
    extra = "vision: {gating: {enabled: false, cpu_budget: 0.01}}\n"
    cfg = load_config(write_config(tmp_path, "scripted.mp4", extra=extra))

    def opener(source: str, options: SourceOptions, clock_: Clock) -> ScriptedSource:
        return ScriptedSource(clock_, 50, False)  # 10 s at 5 fps

    clock = FakeClock(start=1_800_000_000.0)
    service = Service(cfg, clock=clock, opener=opener, pipeline_factory=lambda _c: pipeline)  # type: ignore[arg-type,return-value]
    assert service.run() == 0
    # one face per frame, k = 2: every window is suppressed, so its frame figures (they vary with
    # the number of faces) are in the local audit log only, and health holds its totals an hour
    entries = [
        json.loads(line)
        for p in sorted((tmp_path / "state" / "audit").glob("segment-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    frames = [e["data"] for e in entries if e["kind"] == "frames"]
    analysed = sum(f["analysed"] for f in frames)
    dropped = sum(f["dropped"] for f in frames)
    assert analysed == pipeline.frames
    assert 3 <= analysed <= 10
    assert analysed + dropped == 50
    assert all(m["body"]["frames"] is None for m in messages(tmp_path, "stats"))
    assert service.stage.counters.budget_dropped == service.health.drops == dropped


def test_a_clip_reopened_after_privacy_mode_does_not_take_its_windows_back_in_time(tmp_path: Path) -> None:
    """A replayed clip that privacy mode closed starts again at clip time 0 when capture reopens.
    Its frames were timed from the clip's first start: the open window got them too (175 frames
    analysed in a 10 s window at 5 fps), and the windows after it were published ~200 s in the
    past (found by a hostile-input probe). A reopened clip now goes on from where it stopped."""
    clock = FakeClock(start=1_800_000_000.0)
    cfg = load_config(write_config(tmp_path, "scripted.mp4", extra=NO_GATE))
    service = Service(
        cfg, clock=clock, opener=lambda s, o, c: ScriptedSource(c, 400, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    service.start()
    try:
        for _ in range(120):  # 24 s of clip
            service.step()
        service.privacy.set("signal", True)
        for _ in range(30):  # the loop wakes at least once a window, as it waits for the next end
            service.step()
            clock.advance(5)  # 150 s with capture closed
        service.privacy.set("signal", False)
        for _ in range(120):
            service.step()
    finally:
        service.close()
    audit = (tmp_path / "state" / "audit").glob("segment-*.jsonl")
    frames = [e["data"] for p in audit for line in p.read_text().splitlines()
              if (e := json.loads(line))["kind"] == "frames"]
    starts = [f["window_start_ms"] // 1000 - 1_800_000_000 for f in frames]
    assert starts == sorted(set(starts)), starts
    assert max(f["analysed"] for f in frames) <= 50, [(f["window_start_ms"], f["analysed"]) for f in frames]
    assert starts[-1] >= 150, f"the frames after the reopening were timed before it: {starts}"
    assert verify_all(tmp_path) == []
    windows = [m["body"]["window_start"] - 1_800_000_000 for m in messages(tmp_path, "stats")]
    assert windows == list(range(0, windows[-1] + 10, 10)), (
        f"the windows of the pause were never published: {windows}"
    )
