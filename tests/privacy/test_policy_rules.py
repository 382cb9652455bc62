"""The policy engine: jurisdiction × context × purpose (+ justification, signage, consent) → verdict."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config, parse_config
from agent.errors import EXIT_INPUT, InputError
from agent.privacy import settings
from agent.privacy.policy import (
    PolicyRefused,
    evaluate_policy,
    evaluate_site,
    in_eu,
    policy_digest,
    require_allowed,
)
from agent.privacy.settings import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
SIGNAGE = {
    "confirmed": date(2026, 3, 2),
    "notice_url": "https://example.com/notice",
    "controller": "Example GmbH, privacy@example.com",
}
WP = "emotion recognition in a workplace is prohibited in the EU"


def site(**kw: Any) -> SiteConfig:
    return SiteConfig.model_validate(kw)


# (site settings, refused rule ids, fragment of the first refusal's message or "")
CASES: list[tuple[dict[str, Any], list[str], str]] = [
    ({"jurisdiction": "EU", "context": "retail", "signage": SIGNAGE}, [], ""),
    ({"jurisdiction": "EU", "context": "hospitality", "purpose": "research", "signage": SIGNAGE}, [], ""),
    ({"jurisdiction": "EU", "context": "workplace", "signage": SIGNAGE}, ["eu-ai-act-art5-1f"], WP),
    ({"jurisdiction": "EU", "context": "workplace", "purpose": "research", "justification_ref": "DPIA-1",
      "signage": SIGNAGE}, ["eu-ai-act-art5-1f"], WP),
    ({"jurisdiction": "EU", "context": "education", "purpose": "analytics", "signage": SIGNAGE},
     ["eu-ai-act-art5-1f"], "emotion recognition in an education setting is prohibited in the EU"),
    ({"jurisdiction": "EU", "context": "workplace", "purpose": "safety", "signage": SIGNAGE},
     ["eu-ai-act-art5-1f"], "a safety purpose in a workplace needs a documented justification"),
    ({"jurisdiction": "EU", "context": "workplace", "purpose": "safety", "justification_ref": "DPIA-7",
      "signage": SIGNAGE}, [], ""),
    ({"jurisdiction": "EU", "context": "education", "purpose": "medical", "justification_ref": "MED-3",
      "signage": SIGNAGE}, [], ""),
    ({"jurisdiction": "EU", "context": "workplace", "purpose": "medical", "justification_ref": "MED-3"},
     ["eu-ai-act-art50-3"], "no signage confirmation was found (site.signage is not set)"),
    ({"jurisdiction": "EU", "context": "workplace"}, ["eu-ai-act-art5-1f", "eu-ai-act-art50-3"], WP),
    ({"jurisdiction": "EU", "context": "retail"}, ["eu-ai-act-art50-3"], "site.signage is not set"),
    ({"jurisdiction": "EU", "context": "retail", "consent": "none", "signage": SIGNAGE},
     ["eu-ai-act-art50-3"], "(found site.consent=none); set site.consent to signage"),
    ({"jurisdiction": "DE", "context": "workplace", "signage": SIGNAGE}, ["eu-ai-act-art5-1f"], WP),
    ({"jurisdiction": "FR", "context": "retail"}, ["eu-ai-act-art50-3"], "site.signage is not set"),
    ({"jurisdiction": "UK", "context": "workplace"}, [], ""),
    ({"jurisdiction": "US", "context": "education"}, [], ""),
    ({"jurisdiction": "US-IL", "context": "retail"}, ["bipa-15a", "bipa-15b"],
     "publicly available written retention and destruction schedule"),
    ({"jurisdiction": "US-IL", "context": "retail", "consent": "written_release"}, ["bipa-15a"],
     "(site.retention_policy_url is not set)"),
    ({"jurisdiction": "US-IL", "context": "retail", "retention_policy_url": "https://example.com/ret"},
     ["bipa-15b"], "written release before any biometric collection (found site.consent=signage)"),
    ({"jurisdiction": "US-IL", "context": "workplace", "consent": "written_release",
      "retention_policy_url": "https://example.com/ret"}, [], ""),
]


@pytest.mark.parametrize(("settings", "refused", "fragment"), CASES)
def test_site_gets_exactly_the_expected_verdict(
    settings: dict[str, Any], refused: list[str], fragment: str
) -> None:
    decision = evaluate_site(site(**settings))
    assert [r.rule for r in decision.refusals] == refused
    assert decision.allowed is (not refused)
    if fragment:
        assert fragment in decision.refusals[0].message
    assert "no-sensitive-attributes" in decision.applied_rules


JURISDICTIONS = ["EU", "FR", "DE-BY", "UK", "US", "US-IL", "CH"]
CONTEXTS = ["retail", "hospitality", "transport", "public", "home", "workplace", "education", "healthcare"]
PURPOSES = ["analytics", "safety", "medical", "research"]


@pytest.mark.parametrize(
    ("jurisdiction", "context", "purpose"), list(itertools.product(JURISDICTIONS, CONTEXTS, PURPOSES))
)
def test_full_table_with_notice_and_consent_in_place(jurisdiction: str, context: str, purpose: str) -> None:
    """With signage, a justification and Illinois consent all given, only Art. 5(1)(f) can refuse."""
    s = site(jurisdiction=jurisdiction, context=context, purpose=purpose, justification_ref="DPIA-1",
             signage=SIGNAGE, consent="written_release", retention_policy_url="https://example.com/r")
    banned = jurisdiction in ("EU", "FR", "DE-BY") and context in ("workplace", "education") and (
        purpose not in ("medical", "safety"))
    decision = evaluate_site(s)
    assert decision.allowed is not banned
    assert [r.rule for r in decision.refusals] == (["eu-ai-act-art5-1f"] if banned else [])
    if banned:
        assert decision.refusals[0].source == "EU AI Act Art. 5(1)(f)"
        assert f"site.purpose={purpose}" in decision.refusals[0].message
        assert "set site.purpose to medical or safety and site.justification_ref" in (
            decision.refusals[0].message)


def test_refusal_names_rule_article_and_fix() -> None:
    decision = evaluate_site(site(jurisdiction="EU", context="workplace", signage=SIGNAGE))
    assert str(decision.refusals[0]) == (
        "[refused] eu-ai-act-art5-1f (EU AI Act Art. 5(1)(f)): emotion recognition in a workplace is "
        "prohibited in the EU (found site.jurisdiction=EU, site.context=workplace, "
        "site.purpose=analytics); it is allowed only for medical or safety reasons: set site.purpose "
        "to medical or safety and site.justification_ref to the document that justifies it, or do not "
        "deploy here"
    )


def test_signage_dated_in_the_future_is_refused_when_today_is_known() -> None:
    s = site(jurisdiction="EU", signage=SIGNAGE)
    assert evaluate_site(s).allowed
    decision = evaluate_site(s, today=date(2026, 3, 1))
    assert [r.message for r in decision.refusals] == [
        "site.signage.confirmed is 2026-03-02, after today (2026-03-01); confirm the signage once it "
        "is posted and set that date"
    ]


def test_require_allowed_raises_an_input_error_listing_every_refusal() -> None:
    cfg = parse_config("device_id: a\nsite: {jurisdiction: US-IL, context: retail}\n")
    with pytest.raises(PolicyRefused) as info:
        require_allowed(cfg)
    assert isinstance(info.value, InputError)
    assert info.value.exit_code == EXIT_INPUT
    text = str(info.value)
    assert text.startswith("policy refuses emotion inference at this site:\n  - [refused] bipa-15a")
    assert "Illinois BIPA 740 ILCS 14/15(b)" in text


def test_eu_membership() -> None:
    assert [j for j in ("EU", "DE", "DE-BY", "GR", "UK", "CH", "US-IL", "NO") if in_eu(j)] == [
        "EU", "DE", "DE-BY", "GR"]


def test_example_lobby_config_passes_the_policy() -> None:
    cfg = load_config(ROOT / "firmware_config" / "retail-lobby.yaml")
    decision = evaluate_policy(cfg, today=date(2026, 11, 23))
    assert decision.allowed, decision.explain()
    assert decision.applied_rules == ("eu-ai-act-art5-1f", "eu-ai-act-art50-3", "no-sensitive-attributes")


def test_policy_digest_changes_with_policy_sections_only() -> None:
    base = "device_id: a\nsite: {jurisdiction: US}\n"
    digest = policy_digest(parse_config(base))
    assert policy_digest(parse_config(base + "camera: {fps: 2}\n")) == digest
    zoned = base + "policy:\n  zones: [{name: desk, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]}]\n"
    assert policy_digest(parse_config(zoned)) != digest
    assert policy_digest(parse_config(base + "retention: {stats_days: 5}\n")) != digest
    assert len(digest) == 64


def test_every_policy_setting_has_a_title_and_a_description() -> None:
    """The JSON Schema and the config reference are generated from these models."""
    sections = [settings.SignageConfig, settings.SiteConfig, settings.RetentionConfig,
                settings.ScheduleConfig, settings.ZoneConfig, settings.PrivacyModeConfig,
                settings.PolicyConfig]
    missing = [f"{cls.__name__}.{name}" for cls in sections for name, info in cls.model_fields.items()
               if not info.title or not info.description]
    assert missing == []


def test_greece_under_the_eus_own_code_el_is_in_the_eu() -> None:
    """The EU writes Greece EL (its institutions' style guide); ISO writes GR. ``EL`` with a
    workplace was ALLOWED: the Art. 5(1)(f) ban did not apply (found by a new user's trial)."""
    assert in_eu("EL")
    decision = evaluate_site(site(jurisdiction="EL", context="workplace", signage=SIGNAGE))
    assert [f.rule for f in decision.refusals] == ["eu-ai-act-art5-1f"]


@pytest.mark.parametrize("code", ["XX", "QQ", "ZZ-1", "EX"])
def test_a_jurisdiction_that_is_no_country_code_is_refused_at_its_key(code: str) -> None:
    """``XX`` passed as a jurisdiction no rule knows: a typo in a member state's code switched
    the EU rules off without a word."""
    with pytest.raises(InputError) as info:
        parse_config(f"schema_version: 1\ndevice_id: d-1\nsite: {{jurisdiction: {code}}}\n", "c.yaml")
    (problem,) = info.value.problems
    country = code.split("-", maxsplit=1)[0]
    assert problem.startswith(
        f"site.jurisdiction (c.yaml:3): {country!r} is not an ISO 3166-1 country code, EU or UK"
    ), problem


@pytest.mark.parametrize("code", ["GB", "UK", "EU", "US-IL", "US-CA", "CH", "NO", "DE-BY", "JP"])
def test_a_country_code_is_taken(code: str) -> None:
    assert site(jurisdiction=code).jurisdiction == code
