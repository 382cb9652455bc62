"""``emotion-agent policy explain``: plain text derived from the config; exit 2 when refused."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

from agent.commands.policy_explain import render
from agent.config import load_config, parse_config
from agent.privacy.policy import evaluate_policy

ROOT = Path(__file__).resolve().parents[2]
LOBBY = ROOT / "firmware_config" / "retail-lobby.yaml"
WORKPLACE = """\
device_id: office-1
site:
  jurisdiction: DE
  context: workplace
  purpose: analytics
  signage: {confirmed: 2026-01-05, notice_url: "https://example.com/n", controller: Example AG}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          check=False, cwd=ROOT)


def test_lobby_explanation_states_what_leaves_and_how_long_things_are_kept() -> None:
    cfg = load_config(LOBBY)
    text = render(cfg, evaluate_policy(cfg, date(2026, 11, 23)))
    flat = " ".join(text.split())  # ignore line wrapping
    assert text.startswith("Emotion statistics device lobby-1\n")
    assert "Decision: ALLOWED: emotion inference may run." in text
    assert ("Every 60 seconds, anonymous totals: how many people were seen and the share of each "
            "expression, only when at least 5 different people with an expression were counted "
            "(k = 5)") in flat
    assert "Differential privacy (random noise on counts) is off." in flat
    assert "Messages not yet delivered to the broker: deleted once 7 days old." in flat
    assert ("The audit log (what happened to images, what was sent; no images): in files of at most "
            "one UTC day, each deleted once its newest entry is 365 days old, so an entry is kept "
            "365 to 366 days.") in flat
    assert ("Local statistics (totals per period, used for alert baselines): a UTC day's totals are "
            "deleted 30 days after that day ends.") in flat
    assert ("Old audit files and statistics are deleted at start and every 60 minutes, undelivered "
            "messages with every new message and every minute") in flat
    assert "Images: not kept (zeroed as soon as they are analysed)." in flat
    assert "    Saturday: 09:00-18:00\n    Sunday: off" in text
    assert "1 privacy zone(s) (street-window) are blacked out before any analysis" in flat
    assert "Faces smaller than 4% of the picture height" in flat
    assert "- Controller: Example Retail GmbH, Hauptstr. 1, 10115 Berlin, privacy@shop.example.com" in text
    assert "- Full notice: https://shop.example.com/privacy/lobby-camera" in text
    assert "eu-ai-act-art50-3 (EU AI Act Art. 50(3)): signage confirmed on 2026-03-02" in flat
    assert max(len(line) for line in text.splitlines()) <= 96


def test_explanation_follows_the_config_not_a_template() -> None:
    cfg = parse_config(
        "device_id: a\nsite: {jurisdiction: US}\nanalytics:\n  window_seconds: 300\n  min_people: 8\n"
        "  dp: {enabled: true, epsilon_per_window: 0.25, daily_budget: 4}\n"
        "retention: {spool_days: 2, audit_days: 90, stats_days: 14}\nmqtt: {enabled: false}\n"
        "policy:\n  privacy_mode: {mqtt: false, sigusr1: false, flag_file: /run/ea/privacy}\n")
    flat = " ".join(render(cfg, evaluate_policy(cfg)).split())
    assert "Every 300 seconds" in flat
    assert "at least 8 different people with an expression were counted (k = 8)" in flat
    assert "Differential privacy is on: random noise (epsilon 0.25 per period, at most 4 per UTC day)" in flat
    assert "Publishing is switched off: nothing leaves the device;" in flat
    assert "deleted once 2 days old" in flat
    assert "newest entry is 90 days old, so an entry is kept 90 to 91 days" in flat
    assert "deleted 14 days after that day ends" in flat
    assert "It runs at all hours (no schedule is set)." in flat
    assert "Privacy mode, turned on by a flag file (/run/ea/privacy), switches the camera off" in flat
    assert "Controller: not configured (site.signage.controller)" in flat


def test_cli_explains_an_allowed_site_and_exits_0() -> None:
    proc = run_cli("policy", "explain", "-c", str(LOBBY), "--today", "2026-11-23")
    assert proc.returncode == 0, proc.stderr
    assert "Decision: ALLOWED" in proc.stdout
    assert proc.stderr == ""


def test_cli_exits_2_with_the_refusal_for_an_eu_workplace(tmp_path: Path) -> None:
    path = tmp_path / "office.yaml"
    path.write_text(WORKPLACE)
    proc = run_cli("policy", "explain", "-c", str(path), "--today", "2026-11-23")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Decision: REFUSED" in proc.stdout
    assert proc.stderr.startswith(
        "emotion-agent: error: policy refuses emotion inference at this site:\n"
        "  - [refused] eu-ai-act-art5-1f (EU AI Act Art. 5(1)(f)): emotion recognition in a workplace "
        "is prohibited in the EU (found site.jurisdiction=DE, site.context=workplace, "
        "site.purpose=analytics)")
    assert "set site.purpose to medical or safety and site.justification_ref" in proc.stderr


def test_cli_reports_a_bad_config_as_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("device_id: a\nretention: {frames_days: 0}\n")
    proc = run_cli("policy", "explain", "-c", str(path))
    assert proc.returncode == 2
    assert f"retention.frames_days ({path}:2): unknown key (found 0)" in proc.stderr


def test_the_documented_example_config_loads_and_is_allowed() -> None:
    doc = (ROOT / "docs" / "policy.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config("device_id: doc-example\n" + block, "docs/policy.md")
    decision = evaluate_policy(cfg, date(2026, 11, 23))
    assert decision.allowed, decision.explain()
    assert cfg.policy.schedule is not None
    assert cfg.policy.schedule.hours["mon"] == ["08:00-12:30", "13:30-20:00"]


def test_the_smallest_face_is_stated_as_the_filter_applies_it() -> None:
    """The text rounded `policy.min_face_height` to a whole percent: 0.015 was explained as
    "smaller than 2%" while faces from 1.5 % up were analysed, and 0.004 as "smaller than 0%"."""
    from agent.privacy.zones import filter_faces  # noqa: PLC0415
    from tests.privacy.test_zones import face  # noqa: PLC0415

    for value, stated in ((0.015, "1.5%"), (0.004, "0.4%"), (0.04, "4%"), (0.07, "7%")):
        cfg = parse_config(f"device_id: a\nsite: {{jurisdiction: US}}\nmqtt: {{enabled: false}}\n"
                           f"policy: {{min_face_height: {value}}}\n")
        flat = " ".join(render(cfg, evaluate_policy(cfg)).split())
        assert f"Faces smaller than {stated} of the picture height" in flat, (value, flat)
    kept = filter_faces([face(0.1, 0.1, 0.018, 0.018)], min_face_height=0.015)
    assert len(kept) == 1  # a face of 1.8 % is analysed: "smaller than 2%" was not what happens


def test_without_today_the_signage_date_is_checked_against_the_date_the_service_uses(tmp_path: Path) -> None:
    """The service checks `site.signage.confirmed` against the site's date (the schedule's zone,
    else UTC: `agent.privacy.policy.site_today`); `policy explain` took the machine's local date. With
    the machine's clock in another zone than the site's, around midnight the two disagreed:
    explain said ALLOWED for a config the service refused at start, or the other way round."""
    import os  # noqa: PLC0415
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from agent.clock import SystemClock  # noqa: PLC0415
    from agent.privacy.policy import site_today  # noqa: PLC0415

    now = datetime.now(UTC)
    # A machine zone whose date is not UTC's now (an hour away from either edge).
    machine_tz, shift = ("Etc/GMT-14", 1) if now.hour >= 11 else ("Etc/GMT+12", -1)
    utc_day = now.date()
    confirmed = utc_day + timedelta(days=shift) if shift > 0 else utc_day
    path = tmp_path / "site.yaml"
    path.write_text(
        "device_id: shop-1\nmqtt: {enabled: false}\n"
        "site:\n  jurisdiction: DE\n  context: retail\n"
        f"  signage: {{confirmed: {confirmed.isoformat()}, notice_url: 'https://example.com/n', "
        "controller: Example AG}\n")
    cfg = load_config(path)
    service_allows = evaluate_policy(cfg, site_today(cfg, SystemClock())).allowed
    proc = subprocess.run([sys.executable, "-m", "agent", "policy", "explain", "-c", str(path)],
                          capture_output=True, text=True, check=False, cwd=ROOT,
                          env={**os.environ, "TZ": machine_tz})
    assert proc.returncode in (0, 2), proc.stderr
    explained = proc.returncode == 0
    assert explained == service_allows, (
        f"machine zone {machine_tz}, signage confirmed {confirmed}, UTC date {utc_day}: the service "
        f"{'allows' if service_allows else 'refuses'} it, policy explain said the opposite")


def test_the_privacy_budget_day_is_explained_as_the_utc_day_the_accountant_keeps(tmp_path: Path) -> None:
    """The budget is per UTC day (agent/analytics/dp.py); the text said "per day" and "until the
    next day", which a site in Sydney reads as its own midnight: a budget spent at 07:00 there
    comes back at 11:00 the same local day (00:00 UTC)."""
    from datetime import UTC, datetime  # noqa: PLC0415
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from agent.analytics.dp import BudgetAccountant  # noqa: PLC0415

    budget = BudgetAccountant(tmp_path, daily_budget=1.0)
    spent_at = datetime(2026, 12, 6, 20, 0, tzinfo=UTC).timestamp()  # 07:00 on the 7th in Sydney
    back_at = datetime(2026, 12, 7, 0, 0, tzinfo=UTC).timestamp()  # 11:00 on the 7th in Sydney
    sydney = ZoneInfo("Australia/Sydney")
    assert datetime.fromtimestamp(spent_at, sydney).date() == datetime.fromtimestamp(back_at, sydney).date()
    assert budget.try_spend(1.0, spent_at)
    assert not budget.try_spend(0.5, spent_at + 1)
    assert budget.try_spend(0.5, back_at)  # the budget came back at 00:00 UTC
    cfg = parse_config(
        "device_id: a\nsite: {jurisdiction: AU}\nmqtt: {enabled: false}\n"
        "analytics: {dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 1}}\n"
        "policy: {schedule: {timezone: Australia/Sydney, hours: {mon: [08:00-18:00]}}}\n")
    flat = " ".join(render(cfg, evaluate_policy(cfg)).split())
    assert "at most 1 per UTC day" in flat
    assert "no breakdown is sent until 00:00 UTC" in flat
