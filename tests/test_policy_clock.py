"""A Pi without a real-time clock boots in 1970 (or at fake-hwclock's saved time) until NTP:
the EU signage date check must not refuse a correct config then (was: exit 2 at every such boot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import parse_config
from agent.policy_clock import date_for_policy
from agent.privacy.policy import PolicyRefused, require_allowed
from agent.records import site_today

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
