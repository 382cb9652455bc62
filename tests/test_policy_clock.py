"""A Pi without a real-time clock boots in 1970 (or at fake-hwclock's saved time) until NTP:
the EU signage date check must not refuse a correct config then (was: exit 2 at every such boot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.clock import FakeClock
from agent.config import parse_config
from agent.policy_clock import date_for_policy
from agent.privacy.policy import PolicyRefused, require_allowed, site_today

EU = """\
schema_version: 1
device_id: lobby-1
site:
  jurisdiction: EU
  context: retail
  purpose: analytics
  consent: signage
  signage: {confirmed: 2026-03-02, notice_url: https://shop.example/privacy, controller: Shop Ltd}
"""
BEFORE_SIGNAGE = 1_700_000_000.0  # 2023-11-14: fake-hwclock's last saved time, say
AFTER_SIGNAGE = 1_780_000_000.0  # 2026-05-28


def test_an_unsynchronised_clock_before_the_signage_date_defers_the_check(tmp_path: Path) -> None:
    cfg = parse_config(EU, "agent.yaml")
    clock = FakeClock(BEFORE_SIGNAGE)
    with pytest.raises(PolicyRefused, match=r"after today \(2023-11-14\)"):
        require_allowed(cfg, site_today(cfg, clock))  # what the service checked before
    assert date_for_policy(cfg, clock, tmp_path / "not-synced") is None
    assert require_allowed(cfg, None).allowed


def test_a_synchronised_clock_still_refuses_a_future_signage_date(tmp_path: Path) -> None:
    cfg = parse_config(EU, "agent.yaml")
    flag = tmp_path / "synchronized"
    flag.touch()
    today = date_for_policy(cfg, FakeClock(BEFORE_SIGNAGE), flag)
    assert today is not None
    with pytest.raises(PolicyRefused, match=r"site\.signage\.confirmed is 2026-03-02, after today"):
        require_allowed(cfg, today)


def test_a_date_that_passes_is_used_even_without_synchronisation(tmp_path: Path) -> None:
    cfg = parse_config(EU, "agent.yaml")
    today = date_for_policy(cfg, FakeClock(AFTER_SIGNAGE), tmp_path / "not-synced")
    assert today is not None
    assert today.isoformat() == "2026-05-28"


def test_refusals_that_do_not_depend_on_the_date_are_never_deferred(tmp_path: Path) -> None:
    cfg = parse_config(EU.replace("context: retail", "context: workplace"), "agent.yaml")
    today = date_for_policy(cfg, FakeClock(BEFORE_SIGNAGE), tmp_path / "not-synced")
    with pytest.raises(PolicyRefused, match="eu-ai-act-art5-1f"):
        require_allowed(cfg, today)


def test_a_start_that_deferred_the_signage_date_stops_once_the_clock_is_synchronised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started before NTP with a signage date the clock puts in the future, the service ran on
    until a reload; the docs said the check waits for the clock (found by a new-user trial).
    Once the clock is synchronised, the next turn checks again, and a date still in the future
    ends the run as the start would have (exit 2), said in the audit log."""
    from agent import policy_clock  # noqa: PLC0415
    from agent.config import load_config  # noqa: PLC0415
    from agent.service import Service  # noqa: PLC0415
    from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, write_config  # noqa: PLC0415
    from tests.test_service_audit import entries  # noqa: PLC0415

    flag = tmp_path / "synchronized"
    monkeypatch.setattr(policy_clock, "SYNCED_FLAG", flag)
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    path.write_text(path.read_text().replace(
        "site: {jurisdiction: US, context: retail, purpose: analytics}",
        "site: {jurisdiction: EU, context: retail, purpose: analytics, consent: signage, signage: "
        "{confirmed: 2027-06-01, notice_url: 'https://shop.example/privacy', controller: Shop Ltd}}",
    ))

    class SyncedAfter(CountingPipeline):
        """NTP answers while the 20th frame is analysed."""

        def analyze(self, *args: Any, **kwargs: Any) -> Any:
            if self.frames == 19:
                flag.touch()
            return super().analyze(*args, **kwargs)

    pipeline = SyncedAfter()
    service = Service(
        load_config(path), path, FakeClock(1_800_000_000.0),  # 2027-01-15
        opener=lambda _s, _o, c: ScriptedSource(c, 100, False),  # type: ignore[arg-type,return-value]
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(PolicyRefused, match=r"signage\.confirmed is 2027-06-01, after today \(2027-01-15\)"):
        service.run()
    assert pipeline.frames == 20  # not one frame more
    failed = [e["data"]["message"] for e in entries(tmp_path) if e["kind"] == "error"]
    assert any("after today" in m for m in failed), failed
