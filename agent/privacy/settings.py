"""Config sections of the policy engine: ``site`` (law and notice), ``retention`` and ``policy``.

``site`` says where the device runs and what people were told; ``policy`` says when and where
it may look (schedule, zones, smallest face, privacy mode); ``retention`` says how long derived
data is kept. Frames have no retention key on purpose: their retention is zero and cannot be
configured (an unknown key such as ``retention.frames_days`` is refused).
"""

from __future__ import annotations

import re
from datetime import date
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.errors import shown
from agent.privacy.countries import ISO_3166_1
from agent.settings_base import ConfigPath, Section

Context = Literal[
    "retail", "hospitality", "transport", "public", "home", "workplace", "education", "healthcare"
]
Purpose = Literal["analytics", "safety", "medical", "research"]
ConsentMode = Literal["none", "signage", "written_release"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_URL = r"^https?://[^\s/]+\S*$"
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)\Z")


class SignageConfig(Section):
    """Proof that people in view are told (EU AI Act Art. 50(3)): when, where, by whom."""

    confirmed: date = Field(
        ...,
        title="Date the installer confirmed the notice is posted",
        description="ISO date (YYYY-MM-DD) on which the signage at the camera was checked.",
    )
    notice_url: str = Field(
        ...,
        pattern=_URL,
        max_length=500,
        title="Full privacy notice URL",
        description="The web page the signage points to (http:// or https://).",
    )
    controller: str = Field(
        ...,
        min_length=2,
        max_length=300,
        title="Controller",
        description="Who is responsible for the processing, with a contact (name, address or email).",
    )


JURISDICTION_ALIASES = frozenset({"EU", "UK", "EL"})
"""Codes the rules read that ISO 3166-1 does not assign: the EU itself, the UK (GB in ISO) and
EL (the EU institutions' code for Greece, GR in ISO)."""


class SiteConfig(Section):
    """Where the device runs and on what legal footing; the policy engine decides from it."""

    jurisdiction: str = Field(
        "EU",
        title="Jurisdiction",
        description="Where the device runs: EU (or an EU member code such as DE, FR), UK, US, "
        "US-IL (Illinois), ... Decides which rules apply.",
        pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$",
    )
    context: Context = Field("retail", title="Context", description="What kind of place the camera watches.")
    purpose: Purpose = Field("analytics", title="Purpose", description="Why emotions are measured here.")
    justification_ref: str | None = Field(
        None,
        min_length=3,
        max_length=300,
        title="Justification reference",
        description="Reference to the document justifying a medical or safety purpose (e.g. a DPIA "
        "number); required in the EU for workplaces and schools (AI Act Art. 5(1)(f)).",
    )
    consent: ConsentMode = Field(
        "signage",
        title="Consent mode",
        description="none; signage (people are informed by posted notices); written_release "
        "(a signed release is collected from everyone in view, as Illinois BIPA §15(b) asks).",
    )
    signage: SignageConfig | None = Field(
        None, title="Signage confirmation", description="Required in the EU (AI Act Art. 50(3))."
    )
    retention_policy_url: str | None = Field(
        None,
        pattern=_URL,
        max_length=500,
        title="Public retention schedule URL",
        description="Where the written retention and destruction policy is published "
        "(required in Illinois, BIPA §15(a)).",
    )

    @field_validator("jurisdiction")
    @classmethod
    def _country(cls, value: str) -> str:
        """The part before ``-`` must be a country (or EU, UK, EL): the rules decide by it."""
        country = value.split("-", 1)[0]
        if country not in ISO_3166_1 and country not in JURISDICTION_ALIASES:
            raise ValueError(
                f"{country!r} is not an ISO 3166-1 country code, EU or UK (found {value!r}); write "
                "e.g. DE, FR, GB, US or US-IL (EL, the EU's code for Greece, is read as GR)"
            )
        return value


class RetentionConfig(Section):
    """How long derived data is kept. Frames: zero, not configurable."""

    spool_days: int = Field(
        7, ge=1, le=365, title="Days unsent messages are kept",
        description="MQTT messages the broker has not acknowledged are dropped (and counted) after this.",
    )
    audit_days: int = Field(
        365, ge=1, le=3650, title="Days audit log segments are kept",
        description="Whole segments older than this are purged; a purge entry keeps the log verifiable.",
    )
    stats_days: int = Field(
        30, ge=1, le=3650, title="Days local window statistics (rolling baselines) are kept",
        description="Per-window aggregates kept on the device for alert baselines; never per person.",
    )
    interval_minutes: int = Field(
        60, ge=1, le=1440, title="Minutes between retention runs",
        description="A run also happens at start, so data past its limit never survives a restart.",
    )


class ScheduleConfig(Section):
    """Active hours per weekday in an explicit IANA time zone; outside them the camera is closed."""

    timezone: str = Field(
        ...,
        min_length=1,
        title="IANA time zone",
        description="e.g. Europe/Berlin; daylight saving time is followed. Required: no implicit zone.",
    )
    hours: dict[Weekday, list[str]] = Field(
        ...,
        title="Active hours per weekday",
        description='mon..sun → list of "HH:MM-HH:MM" (end may be 24:00). A day not listed is '
        "inactive. Overnight: split at midnight (mon: [22:00-24:00], tue: [00:00-02:00]).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown IANA time zone {value!r}; use a name such as Europe/Berlin or America/Chicago"
            ) from exc
        return value

    @field_validator("hours")
    @classmethod
    def _valid_ranges(cls, value: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        for day, ranges in value.items():
            spans = sorted(parse_range(day, r) for r in ranges)
            for (_, end), (start, _) in pairwise(spans):
                if start < end:
                    raise ValueError(f"{day}: time ranges overlap ({shown(ranges)}); merge them")
        if not any(value.values()):
            raise ValueError("no active hours on any day: the device would never run")
        return value


def parse_range(day: str, text: str) -> tuple[int, int]:
    """``"08:30-17:00"`` → minutes since midnight (510, 1020); errors name the day and value."""
    m = _HOURS.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{day}: {shown(text)} is not a time range HH:MM-HH:MM (e.g. 08:00-18:30)")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if end > 24 * 60 or end <= start:
        raise ValueError(
            f"{day}: {shown(text)} must end after it starts, at 24:00 at the latest; "
            "split an overnight range at midnight"
        )
    return start, end


class ZoneConfig(Section):
    """A privacy zone: a polygon blanked to black before the face detector sees the frame."""

    name: str = Field(
        ..., pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$", title="Zone name",
        description="Lower-case letters, digits, - and _; shown by policy explain and in logs.",
    )
    polygon: list[tuple[float, float]] = Field(
        ...,
        min_length=3,
        max_length=64,
        title="Vertices [x, y], normalised 0..1",
        description="x from the left edge, y from the top edge, as fractions of the frame.",
    )

    @field_validator("polygon")
    @classmethod
    def _in_frame(cls, value: list[tuple[float, float]], info: ValidationInfo) -> list[tuple[float, float]]:
        for i, (x, y) in enumerate(value):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"vertex {i} {[x, y]} is outside the frame; coordinates go from 0 to 1")
        if _collinear(value):
            raise ValueError(
                f"zone {info.data.get('name', '?')}: its vertices {[list(p) for p in value]} all lie on "
                "one line, so it covers nothing (no pixel is blanked); give at least three vertices "
                "that enclose an area"
            )
        return value


def _collinear(points: list[tuple[float, float]]) -> bool:
    """True when every vertex lies on one line (or one point): the polygon encloses no pixel
    centre under the even-odd rule of ``agent.privacy.zones.rasterise``."""
    (x0, y0), *rest = points
    far = max(rest, key=lambda p: abs(p[0] - x0) + abs(p[1] - y0))
    dx, dy = far[0] - x0, far[1] - y0
    return all(abs(dx * (y - y0) - dy * (x - x0)) <= 1e-12 for x, y in rest)


class PrivacyModeConfig(Section):
    """Ways to pause capture; any one that is on pauses it."""

    mqtt: bool = Field(
        True, title="Accept the MQTT switch",
        description="<base>/cmd/privacy_mode/set with ON or OFF (Home Assistant's switch).",
    )
    sigusr1: bool = Field(
        True, title="SIGUSR1 toggles privacy mode", description="e.g. systemctl kill -s USR1 emotion-agent"
    )
    flag_file: ConfigPath | None = Field(
        None,
        title="Flag file",
        description="While this file exists, capture is paused (e.g. /run/emotion-agent/privacy).",
    )
    poll_seconds: float = Field(
        1.0, gt=0, le=60, title="Flag file check interval (s)",
        description="Capture may continue for at most this long after the file appears.",
    )

    @field_validator("flag_file", mode="before")
    @classmethod
    def _names_a_file(cls, value: object) -> object:
        """'' (the working folder), '.', or a name ending in '/': a folder, which always exists,
        so privacy mode would stay on for ever (the poller only asks whether the path exists)."""
        if isinstance(value, str) and (value in ("", ".", "..") or value.endswith(("/", "/.", "/.."))):
            raise ValueError(
                f"flag_file {value!r} names a folder, not a file: a folder always exists, so "
                "privacy mode would stay on for ever; name a file, e.g. /run/emotion-agent/privacy"
            )
        return value


class PolicyConfig(Section):
    """When and where the device may look."""

    schedule: ScheduleConfig | None = Field(
        None, title="Active hours", description="Omit to run at all hours."
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list, max_length=32, title="Privacy zones",
        description="Polygons painted black before the face detector sees the frame (street windows, "
        "staff desks): nothing inside them is ever analysed.",
    )
    min_face_height: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        title="Smallest face height (fraction of frame height) analysed",
        description="Faces smaller than this (passers-by far away) are dropped before classification.",
    )
    privacy_mode: PrivacyModeConfig = Field(
        default_factory=PrivacyModeConfig, title="Privacy mode",
        description="Sources that pause capture (camera closed); any one that is on pauses it.",
    )

    @model_validator(mode="after")
    def _unique_zone_names(self) -> PolicyConfig:
        names = [z.name for z in self.zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"policy.zones: names must be unique (repeated: {', '.join(dupes)})")
        return self
