"""The service's own records: digests, changed keys, and the audit entries of one window."""

from __future__ import annotations

from agent.analytics.windows import WindowReport
from agent.audit.entries import validate_data
from agent.audit.imagescan import StateScan
from agent.clock import FakeClock
from agent.config import parse_config
from agent.privacy.policy import site_today
from agent.records import changed_keys, config_hash, policy_fields, window_audit_entries

BASE = "device_id: lobby-1\nsite: {jurisdiction: US, context: retail, purpose: analytics}\n"


def report(**changes: object) -> WindowReport:
    fields: dict[str, object] = {
        "window_start": 1_800_000_000,
        "window_end": 1_800_000_060,
        "covers_from": 1_800_000_000,
        "complete": True,
        "k": 5,
        "suppressed": None,
        "people": 7,
        "votes": {"happy": 5, "neutral": 2},
        "shares_pm": {"happy": 714, "neutral": 286},
        "abstained": {"turned": 1},
        "valence_milli": 500,
        "arousal_milli": 100,
        "frames_captured": 300,
        "frames_analysed": 290,
        "frames_dropped": 6,
        "frames_discarded": 3,
        "frames_queued": 1,
        "lifetime_count": 290,
        "lifetime_max_ms": 48,
        "lifetime_p99_ms": 40,
        "noise": False,
    }
    fields.update(changes)
    return WindowReport(**fields)  # type: ignore[arg-type]


SCAN = StateScan(files=9, images=0, unreadable=1)


def test_window_entries_carry_the_measured_figures_and_pass_the_audit_schema() -> None:
    """Every frame figure is the counted one: no remainder makes the balance hold by itself."""
    (frames_kind, frames), (window_kind, window) = window_audit_entries(report(), SCAN)
    assert (frames_kind, window_kind) == ("frames", "window")
    assert (frames["captured"], frames["analysed"], frames["dropped"]) == (300, 290, 6)
    assert (frames["discarded"], frames["queued"]) == (3, 1)
    assert (frames["state_files_scanned"], frames["state_image_files"]) == (8, 0)
    assert "pixel_bytes_persisted" not in frames
    assert frames["window_start_ms"] == 1_800_000_000_000
    assert frames["window_ms"] == 60_000
    assert window == {
        "window_start_ms": 1_800_000_000_000,
        "window_ms": 60_000,
        "people": 7,
        "published": True,
        "suppressed": None,
        "k": 5,
        "dp_spent_micro": None,
    }
    validate_data("frames", frames)
    validate_data("window", window)


def test_a_suppressed_window_is_recorded_as_not_published() -> None:
    _, (_, window) = window_audit_entries(report(suppressed="below_k", people=None, votes=None), SCAN)
    assert window["published"] is False
    assert window["suppressed"] == "below_k"
    assert window["people"] == 0


def test_changed_keys_name_the_section_and_key() -> None:
    before = parse_config(BASE)
    after = parse_config(BASE + "analytics: {min_people: 8}\ncamera: {fps: 2}\n")
    assert changed_keys(before, after) == ["analytics.min_people", "camera.fps"]
    assert config_hash(before) != config_hash(after)
    assert config_hash(before) == config_hash(parse_config(BASE))


def test_policy_fields_pass_the_audit_schema() -> None:
    cfg = parse_config(BASE + "analytics: {dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 24}}\n")
    fields = policy_fields(cfg)
    assert fields["dp_epsilon_milli"] == 500
    assert fields["dp_daily_budget_milli"] == 24_000
    assert fields["min_people"] == 5
    validate_data("policy_change", {"policy": fields, "reason": "reload"})


def test_site_today_uses_the_schedule_zone() -> None:
    clock = FakeClock(start=1_767_225_600.0 - 3600)  # 2025-12-31 23:00 UTC
    plain = parse_config(BASE)
    assert site_today(plain, clock).isoformat() == "2025-12-31"
    zoned = parse_config(
        BASE + "policy: {schedule: {timezone: Europe/Berlin, hours: {mon: ['00:00-24:00']}}}\n"
    )
    assert site_today(zoned, clock).isoformat() == "2026-01-01"
