"""Active hours: a pure function of UTC time, so the service can close the camera outside them.

The schedule is a set of half-open local-time ranges ``[start, end)`` per weekday in one IANA
zone. ``is_active`` converts an instant to local wall time and looks it up; ``next_change``
finds the next instant at which that answer flips, so the service sleeps until then with the
camera closed (not merely ignoring frames). Daylight saving time is handled by searching every
instant where the answer could flip (range edges in both folds, and the zone's own offset
changes) and asking ``is_active`` at each, so a range that starts in the spring-forward gap
begins when the clocks jump and nothing is assumed about the repeated autumn hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.privacy.settings import WEEKDAYS, ScheduleConfig, parse_range

_HORIZON_DAYS = 9
"""A weekly schedule repeats within 7 days; 2 more cover a DST shift at either end."""


@dataclass(frozen=True)
class Schedule:
    """Weekly active ranges (minutes since local midnight) in one time zone."""

    zone: ZoneInfo
    ranges: tuple[tuple[tuple[int, int], ...], ...]
    """Index 0 = Monday … 6 = Sunday; each a sorted tuple of (start, end) minutes."""

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> Schedule:
        days = tuple(
            tuple(sorted(parse_range(day, r) for r in cfg.hours.get(day, []))) for day in WEEKDAYS
        )
        return cls(zone=ZoneInfo(cfg.timezone), ranges=days)

    def is_active(self, now_utc: datetime) -> bool:
        """True when ``now_utc`` (timezone-aware) falls in an active range of its local day."""
        local = _aware(now_utc).astimezone(self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 60e6
        return any(start <= minute < end for start, end in self.ranges[local.weekday()])

    def next_change(self, now_utc: datetime) -> datetime | None:
        """The first instant after ``now_utc`` at which ``is_active`` flips (UTC); None if never."""
        now_utc = _aware(now_utc).astimezone(UTC)
        state = self.is_active(now_utc)
        for candidate in self._candidates(now_utc):
            if candidate > now_utc and self.is_active(candidate) != state:
                return candidate
        return None

    def _candidates(self, now_utc: datetime) -> list[datetime]:
        """Every instant where the answer could flip: range edges and UTC-offset changes."""
        first = now_utc.astimezone(self.zone).date() - timedelta(days=1)
        out: set[datetime] = set()
        for offset in range(_HORIZON_DAYS):
            day = first + timedelta(days=offset)
            for start, end in self.ranges[day.weekday()]:
                for minute in (start, end):
                    days, rest = divmod(minute, 24 * 60)
                    wall = datetime.combine(
                        day + timedelta(days=days), time(rest // 60, rest % 60), tzinfo=self.zone
                    )
                    out.update(wall.replace(fold=f).astimezone(UTC) for f in (0, 1))
            out.update(_offset_changes(self.zone, day))
        return sorted(out)


def _offset_changes(zone: ZoneInfo, day: date) -> list[datetime]:
    """The UTC instant around a local day where the zone's offset changes (found by bisection)."""
    lo = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC) - timedelta(hours=3)
    hi = lo + timedelta(hours=30)
    if lo.astimezone(zone).utcoffset() == hi.astimezone(zone).utcoffset():
        return []
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    before = lo.astimezone(zone).utcoffset()
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return [datetime.fromtimestamp(hi_s, UTC)]


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("schedule times must be timezone-aware (UTC); got a naive datetime")
    return moment


def describe(cfg: ScheduleConfig) -> list[str]:
    """Plain-language lines, one per weekday, for ``policy explain``."""
    names = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday",
             "fri": "Friday", "sat": "Saturday", "sun": "Sunday"}
    lines = []
    for day in WEEKDAYS:
        ranges = cfg.hours.get(day, [])
        lines.append(f"{names[day]}: {', '.join(ranges) if ranges else 'off'}")
    return lines
