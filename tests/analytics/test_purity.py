"""The analytics stage is pure: it imports with cv2, LiteRT, paho and picamera2 blocked, and
nothing it logs or publishes carries a track id, a box or a pixel."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.analytics.alerts import AlertEngine
from agent.analytics.dp import BudgetAccountant, DiscreteLaplace
from agent.analytics.settings import AlertRuleConfig, AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker
from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.clock import FakeClock
from agent.logs import JsonFormatter
from tests.purity import import_blocked

from .faces import face, seeded

MODULES = ["tracker", "windows", "anonymity", "dp", "alerts", "baseline", "health", "settings"]


def test_modules_import_with_hardware_and_network_libraries_blocked() -> None:
    result = import_blocked([f"agent.analytics.{mod}" for mod in MODULES])
    assert result.ok, result.stderr


def test_no_track_id_box_or_float_leaks_into_logs_reports_or_events(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = AnalyticsConfig.model_validate({"min_people": 2, "dp": {"enabled": True}})
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(1))
    agg = WindowAggregator(
        cfg, clock, dp=DiscreteLaplace(seeded(2)), accountant=BudgetAccountant(tmp_path, 10)
    )
    alerts = AlertEngine([AlertRuleConfig(name="crowd", metric="people", threshold=1)])
    boxes = [(0.1234, 0.2345, 0.0567, 0.0678), (0.6111, 0.3222, 0.0533, 0.0644)]
    caplog.set_level(logging.DEBUG)
    published = []
    for i in range(600):
        t = 1_700_006_400 + i * 0.2
        faces = [face(x=x + 0.001 * (i % 3), y=y, w=w, h=h, label="happy") for x, y, w, h in boxes]
        agg.add_frame(t, tracker.update(faces, t), FrameCounters(lifetimes_ms=(12.5,)))
        for rep in agg.poll(t):
            published.append(rep.to_body())
            published += [e.to_body() for e in alerts.evaluate(rep)]
    published += [r.to_body() for r in agg.flush(1_700_006_520)]
    ids = {str(tr.track_id) for tr in tracker._tracks.values()}  # the secret under test
    assert ids
    logged = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    text = json.dumps(published) + logged
    assert published
    assert "window closed" in logged
    for secret in ids | {"0.1234", "0.2345", "0.6111", "TrackHandle", "handle"}:
        assert secret not in text
    assert "." not in json.dumps(published).replace('"', "")  # integers only: no decimal point
