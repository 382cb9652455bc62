"""``policy explain`` says what the code does: each test runs both on one config and compares.

Issue 13 found the text claiming that below k "only the number of people is sent" (the code
sends no number) and that "nothing leaves the device" while signed JSON lines were written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.analytics.health import FACE_DEPENDENT
from agent.clock import FakeClock
from agent.config import load_config
from agent.service import Service
from tests.test_service import messages, verify_all, write_config

ROOT = Path(__file__).resolve().parents[2]


def explain(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "policy", "explain", "-c", str(config)],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


@pytest.mark.slow
def test_below_k_outputs_dp_and_health_are_as_explained(tmp_path: Path, sample_clip: Path) -> None:
    """k = 7 on the demo clip (at most six people): every window is below k."""
    config = write_config(tmp_path, str(sample_clip), k=7)
    text = explain(config)
    assert ("With fewer people, nothing about people is sent for that period: no number of people, "
            "no expressions and no frame figures, only that it had fewer than k.") in text
    assert f"written as JSON lines to the file {tmp_path / 'out.jsonl'}" in text
    assert "Differential privacy (random noise on counts) is off." in text
    assert "are sent only once every 3600 seconds" in text

    assert Service(load_config(config), clock=FakeClock(start=1_800_000_000.0)).run() == 0
    assert verify_all(tmp_path) == []  # the JSON lines are there, and signed
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert stats
    for body in stats:
        assert body["suppressed"] == "below_k"
        assert body["noise"] is False
        for key in ("people", "votes", "shares_pm", "abstained", "frames", "lifetime_ms"):
            assert body[key] is None, key
    for body in (m["body"] for m in messages(tmp_path, "health")):
        assert all(body[key] is None for key in FACE_DEPENDENT)  # the clip is shorter than 3600 s


def test_nothing_leaves_when_no_output_is_configured(tmp_path: Path, sample_clip: Path) -> None:
    config = write_config(tmp_path, str(sample_clip))
    config.write_text(config.read_text().replace(f'outputs: {{jsonl: "{tmp_path / "out.jsonl"}"}}\n', ""))
    text = explain(config)
    assert "Publishing is switched off: nothing leaves the device;" in text
    assert "JSON lines" not in text
    service = Service(load_config(config), clock=FakeClock(start=1_800_000_000.0))
    assert service.outputs == []
    service.close()
    assert not (tmp_path / "out.jsonl").exists()


def test_differencing_is_explained_as_configured(tmp_path: Path) -> None:
    """withhold (default), merge, off, and off under DP: the text follows the setting the
    aggregator uses (tests/analytics/test_differencing.py runs each)."""
    from agent.analytics.windows import WindowAggregator  # noqa: PLC0415

    cases = {
        "": ("is not sent: subtracting the two would single them out", "withhold"),
        "differencing: merge, ": ("is not sent on its own: it is carried into the next period", "merge"),
        "differencing: off, ": ("Periods are sent even when only a few people came or left", "off"),
        "dp: {enabled: true}, ": ("Periods are not compared with each other before sending", "off"),
    }
    for i, (extra, (sentence, mode)) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        config = write_config(folder, "samples/lobby.mp4")
        config.write_text(config.read_text().replace("analytics: {", "analytics: {" + extra))
        assert sentence in explain(config)
        cfg = load_config(config)
        agg = WindowAggregator(cfg.analytics, FakeClock(), dp=_Zero(), accountant=_Budget())
        assert agg.differencing == mode


class _Zero:
    def sample(self, epsilon: float) -> int:
        return 0


class _Budget:
    def try_spend(self, epsilon: float, window_start: int) -> bool:
        return True

    def remaining_micro(self, window_start: int) -> int:
        return 0


def test_what_explain_says_is_recorded_of_a_deletion_is_in_the_audit_log(tmp_path: Path) -> None:
    """The text said "each deletion is recorded in the audit log", but the local statistics
    (the alert baseline's days past `retention.stats_days`) are deleted on the retention timer
    with a log line only: no audit entry names them. The text now says which deletions the
    audit log records (audit segments: `purge`; undelivered messages: `spool_dropped`)."""
    import json  # noqa: PLC0415

    from tests.test_reload_field import audit_entries, scripted_service  # noqa: PLC0415
    from tests.test_service import NO_GATE  # noqa: PLC0415

    t0 = 1_800_000_000.0
    config = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + "retention: {stats_days: 2}\n")
    state = tmp_path / "state"
    state.mkdir()
    day = t0 // 86_400 - 10  # a day of local statistics well past stats_days
    baseline = state / "alert_baseline.json"
    baseline.write_text(json.dumps({"version": 2, "metrics": {"people": {"3": [[day, 5, 4.0, 1.0]]}}}))
    service = scripted_service(config, FakeClock(start=t0), 10)
    service.start()
    service.step()  # retention runs in the first loop turn
    service.close()
    assert json.loads(baseline.read_text())["metrics"] == {}, "the stale day was not deleted"
    recorded = [e for e in audit_entries(tmp_path) if e["kind"] == "purge" or
                (e["kind"] == "error" and "stat" in e["data"]["code"])]
    text = explain(config)
    assert ("each deletion is recorded in the audit log" in text) == bool(recorded)
    assert ("deleted local statistics are not recorded there" in text) == (not recorded)
