"""The policy engine: refuse what the law forbids, and say which rule, article and fix.

Each rule is a small function of the site settings returning ``Finding``s: a refusal (the
device must not infer emotions) or a note (an obligation that is met, or a reminder). The
service calls ``require_allowed(cfg)`` at start and on every reload; ``emotion-agent policy
explain`` shows the same decision in plain language. Summaries of the law, not legal advice:
see docs/policy.md and REFERENCE.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import rfc8785

from agent.clock import Clock
from agent.errors import InputError
from agent.privacy.settings import PolicyConfig, RetentionConfig, SiteConfig


class Governed(Protocol):
    """What the policy engine reads of a config (``AgentConfig`` has it): the sections that
    decide whether, when and how long the device may look, and nothing else."""

    @property
    def site(self) -> SiteConfig: ...

    @property
    def policy(self) -> PolicyConfig: ...

    @property
    def retention(self) -> RetentionConfig: ...

EU_MEMBERS = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    "EL",  # Greece as the EU writes it (GR in ISO 3166-1)
})
"""ISO 3166-1 codes of the EU member states (and EL for Greece); ``EU`` itself and ``DE-BY``-style
subdivisions count."""


def in_eu(jurisdiction: str) -> bool:
    country = jurisdiction.split("-", 1)[0]
    return country == "EU" or country in EU_MEMBERS


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on this site."""

    rule: str
    """Stable id, e.g. eu-ai-act-art5-1f; published in the audit log."""
    source: str
    """The article it comes from, e.g. EU AI Act Art. 5(1)(f)."""
    refused: bool
    message: str

    def __str__(self) -> str:
        verdict = "refused" if self.refused else "ok"
        return f"[{verdict}] {self.rule} ({self.source}): {self.message}"


@dataclass(frozen=True)
class PolicyDecision:
    """Whether emotion inference may run here, and why."""

    allowed: bool
    refusals: tuple[Finding, ...]
    notes: tuple[Finding, ...]
    applied_rules: tuple[str, ...] = field(default=())
    """Ids of every rule that applied to this site (refused or satisfied)."""

    def explain(self) -> str:
        lines = [str(f) for f in (*self.refusals, *self.notes)]
        return "\n".join(lines)


class PolicyRefused(InputError):
    """The site's settings make emotion inference unlawful; exit 2 with every refusal."""

    def __init__(self, decision: PolicyDecision) -> None:
        self.decision = decision
        reasons = "\n".join(f"  - {r}" for r in decision.refusals)
        super().__init__(f"policy refuses emotion inference at this site:\n{reasons}")


Rule = Callable[[SiteConfig, date | None], list[Finding]]

ART5 = ("eu-ai-act-art5-1f", "EU AI Act Art. 5(1)(f)")
ART50 = ("eu-ai-act-art50-3", "EU AI Act Art. 50(3)")
BIPA_A = ("bipa-15a", "Illinois BIPA 740 ILCS 14/15(a)")
BIPA_B = ("bipa-15b", "Illinois BIPA 740 ILCS 14/15(b)")
NO_SENSITIVE = ("no-sensitive-attributes", "EU AI Act Art. 5(1)(g); GDPR Art. 9")


def rule_eu_workplace_education(site: SiteConfig, today: date | None) -> list[Finding]:
    """Emotion recognition at work or in education is banned in the EU except medical/safety."""
    if not in_eu(site.jurisdiction):
        return []
    if site.context not in ("workplace", "education"):
        return [Finding(*ART5, False,
            f"context {site.context} is not a workplace or education setting, so the ban does not "
            "apply to the people watched; keep staff-only areas out of view with policy.zones")]
    found = f"site.jurisdiction={site.jurisdiction}, site.context={site.context}, site.purpose={site.purpose}"
    if site.purpose not in ("medical", "safety"):
        return [Finding(*ART5, True,
            f"emotion recognition in {_place(site.context)} is prohibited in the EU (found {found}); it is "
            "allowed only for medical or safety reasons: set site.purpose to medical or safety and "
            "site.justification_ref to the document that justifies it, or do not deploy here")]
    if not site.justification_ref:
        return [Finding(*ART5, True,
            f"a {site.purpose} purpose in {_place(site.context)} needs a documented justification "
            f"({found}, site.justification_ref is not set); set site.justification_ref to the "
            "reference of the assessment that justifies it (e.g. DPIA-2026-014)")]
    return [Finding(*ART5, False,
        f"{site.purpose} exception applies in {_place(site.context)}, "
        f"justified by {site.justification_ref}")]


def rule_eu_transparency(site: SiteConfig, today: date | None) -> list[Finding]:
    """People exposed to emotion recognition in the EU must be informed: signage, confirmed."""
    if not in_eu(site.jurisdiction):
        return []
    if site.consent == "none":
        return [Finding(*ART50, True,
            "people in view must be informed of emotion recognition in the EU (found "
            "site.consent=none); set site.consent to signage (or written_release) and fill "
            "site.signage with confirmed (date), notice_url and controller")]
    sign = site.signage
    if sign is None:
        return [Finding(*ART50, True,
            "people in view must be informed of emotion recognition in the EU and no signage "
            "confirmation was found (site.signage is not set); add site.signage with confirmed "
            "(the date the notice was checked at the camera), notice_url and controller")]
    if today is not None and sign.confirmed > today:
        return [Finding(*ART50, True,
            f"site.signage.confirmed is {sign.confirmed.isoformat()}, after today "
            f"({today.isoformat()}); confirm the signage once it is posted and set that date")]
    return [Finding(*ART50, False,
        f"signage confirmed on {sign.confirmed.isoformat()}, notice at {sign.notice_url}, "
        f"controller: {sign.controller}")]


def rule_illinois_bipa(site: SiteConfig, today: date | None) -> list[Finding]:
    """Illinois: a written release from everyone in view and a public retention schedule."""
    if site.jurisdiction != "US-IL":
        return []
    out = []
    if site.retention_policy_url is None:
        out.append(Finding(*BIPA_A, True,
            "Illinois requires a publicly available written retention and destruction schedule "
            "(site.retention_policy_url is not set); publish it and set site.retention_policy_url"))
    else:
        out.append(Finding(*BIPA_A, False, f"retention schedule published at {site.retention_policy_url}"))
    if site.consent != "written_release":
        out.append(Finding(*BIPA_B, True,
            f"Illinois requires written notice and a written release before any biometric "
            f"collection (found site.consent={site.consent}); collect signed releases and set "
            "site.consent to written_release"))
    else:
        out.append(Finding(*BIPA_B, False, "written release collected from everyone in view"))
    return out


def rule_no_sensitive_attributes(site: SiteConfig, today: date | None) -> list[Finding]:
    """Always: the agent infers emotions only, never race, health, beliefs or identity."""
    return [Finding(*NO_SENSITIVE, False,
        "only facial-expression categories are inferred; never identity, age, sex, ethnicity, "
        "health or beliefs, and there is no setting to enable them")]


RULES: tuple[Rule, ...] = (
    rule_eu_workplace_education,
    rule_eu_transparency,
    rule_illinois_bipa,
    rule_no_sensitive_attributes,
)


def evaluate_site(site: SiteConfig, today: date | None = None) -> PolicyDecision:
    """Apply every rule; ``today`` (the local date) also checks the signage date is not future."""
    findings = [f for rule in RULES for f in rule(site, today)]
    refusals = tuple(f for f in findings if f.refused)
    notes = tuple(f for f in findings if not f.refused)
    applied = tuple(dict.fromkeys(f.rule for f in findings))
    return PolicyDecision(allowed=not refusals, refusals=refusals, notes=notes, applied_rules=applied)


def evaluate_policy(cfg: Governed, today: date | None = None) -> PolicyDecision:
    """The decision for a whole config (``AgentConfig``): see ``evaluate_site``."""
    return evaluate_site(cfg.site, today)


def site_today(cfg: Governed, clock: Clock) -> date:
    """The site's local date (its schedule's zone, else UTC), for date-bound policy checks."""
    zone = ZoneInfo(cfg.policy.schedule.timezone) if cfg.policy.schedule else UTC
    return datetime.fromtimestamp(clock.time(), zone).date()


def require_allowed(cfg: Governed, today: date | None = None) -> PolicyDecision:
    """The start/reload check: return the decision, or raise ``PolicyRefused`` (exit 2)."""
    decision = evaluate_policy(cfg, today)
    if not decision.allowed:
        raise PolicyRefused(decision)
    return decision


def policy_digest(cfg: Governed) -> str:
    """SHA-256 of the canonical JSON (RFC 8785) of ``site``, ``policy`` and ``retention``.

    On reload the service compares digests: a change re-runs ``require_allowed`` and is
    written to the audit log as a policy change; anything else in the config does not count.
    """
    parts = {"site": cfg.site, "policy": cfg.policy, "retention": cfg.retention}
    sections = {name: parts[name].model_dump(mode="json") for name in POLICY_SECTIONS}
    return hashlib.sha256(rfc8785.dumps(sections)).hexdigest()


POLICY_SECTIONS = ("site", "policy", "retention")


def _place(context: str) -> str:
    return {"workplace": "a workplace", "education": "an education setting"}.get(context, context)
