"""A rolling baseline per hour of the week, so each camera position is compared to its own normal.

For every metric a baseline-mode rule reads (e.g. the share of angry + fear), each of the 168
hours of the week (in the site's time zone, Monday 00:00 = slot 0) keeps, per UTC day on which
windows fell in it, a count, a mean and a sum of squared deviations (Welford). A slot's
statistics combine its newest days (Chan et al.'s pairwise formulas) until they hold
``max_samples`` windows, and never a day past ``retention.stats_days``: such a day is not
used, and ``purge`` (the retention timer) deletes it. A slot answers only once it has
``min_samples`` windows. The table lives in ``state_dir`` (``alert_baseline.json``, atomic
writes) and holds aggregates only: no person, no id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.analytics.dp import atomic_write_json
from agent.analytics.settings import BaselineConfig
from agent.errors import PayloadError

HOURS_PER_WEEK = 168
DAY_S = 86_400
VERSION = 2
Bucket = list[float]
"""One UTC day of one slot: [day number (Unix time // 86 400), windows, mean, squared deviations]."""


@dataclass(frozen=True, slots=True)
class SlotStats:
    """What a slot knows: windows seen, mean and standard deviation (metric integer units)."""

    n: int
    mean: float
    stdev: float


def combine(buckets: list[Bucket]) -> tuple[int, float, float]:
    """(windows, mean, squared deviations) of the union of several days (Chan, Golub, LeVeque)."""
    n, mean, m2 = 0, 0.0, 0.0
    for _, bn, bmean, bm2 in buckets:
        total = n + int(bn)
        delta = bmean - mean
        mean += delta * bn / total
        m2 += bm2 + delta * delta * n * bn / total
        n = total
    return n, mean, m2


class Baseline:
    """Per-metric, per-hour-of-week mean and variance of recent days, persisted in ``state_dir``."""

    FILE_NAME = "alert_baseline.json"

    def __init__(self, state_dir: Path, settings: BaselineConfig, keep_days: int = 30) -> None:
        """``keep_days``: ``retention.stats_days``."""
        self.path = Path(state_dir) / self.FILE_NAME
        self.settings = settings
        self.keep_days = keep_days
        self._zone = ZoneInfo(settings.timezone)
        self._table: dict[str, dict[str, list[Bucket]]] = self._load()

    def _load(self) -> dict[str, dict[str, list[Bucket]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            written = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            why = "JSON nested too deeply" if isinstance(exc, RecursionError) else exc
            raise PayloadError(
                f"{self.path}: cannot read the alert baseline ({why}); remove the file to start "
                "a new baseline (alerts in baseline mode wait for min_samples windows again)"
            ) from exc
        metrics = data.get("metrics") if isinstance(data, dict) else None
        version = data.get("version") if isinstance(data, dict) else None
        if version == 1 and _is_table(metrics, _is_v1_slot):
            # [n, mean, variance] per slot, undated: dated the day the file was last written
            day = float(written // DAY_S)
            return {
                key: {slot: [[day, v[0], v[1], v[2] * v[0]]] for slot, v in slots.items()}
                for key, slots in metrics.items()  # type: ignore[union-attr]
            }
        if version != VERSION or not _is_table(metrics, _is_slot):
            raise PayloadError(
                f'{self.path}: the alert baseline is damaged (expected {{"version": {VERSION}, '
                '"metrics": {key: {slot: [[day, n, mean, squared deviations], ...]}}}); remove '
                "the file to start a new baseline"
            )
        return metrics  # type: ignore[return-value]

    def slot(self, t: float) -> int:
        """Hour of the week of Unix time ``t`` in the site's zone: Monday 00h = 0, Sunday 23h = 167."""
        local = datetime.fromtimestamp(t, UTC).astimezone(self._zone)
        return local.weekday() * 24 + local.hour

    def _kept(self, bucket: Bucket, now: float) -> bool:
        """A day is kept until ``keep_days`` have passed since its last possible window."""
        return now - (bucket[0] + 1) * DAY_S < self.keep_days * DAY_S

    def stats(self, key: str, t: float) -> SlotStats | None:
        """The slot of ``t`` for metric ``key`` (its newest days within retention, up to about
        ``max_samples`` windows), or None until it has ``min_samples`` windows."""
        buckets = [b for b in self._table.get(key, {}).get(str(self.slot(t)), []) if self._kept(b, t)]
        recent: list[Bucket] = []
        for bucket in sorted(buckets, key=lambda b: b[0], reverse=True):
            recent.append(bucket)
            if sum(b[1] for b in recent) >= self.settings.max_samples:
                break
        n, mean, m2 = combine(recent)
        if n < self.settings.min_samples:
            return None
        return SlotStats(n, mean, math.sqrt(max(m2 / n, 0.0)))

    def update(self, values: dict[str, int], t: float) -> None:
        """Fold one window's values (metric key -> integer value) into the slot of ``t``; persist."""
        if not values:
            return
        slot = str(self.slot(t))
        day = float(t // DAY_S)
        for key, x in values.items():
            buckets = self._table.setdefault(key, {}).setdefault(slot, [])
            if not buckets or buckets[-1][0] != day:
                buckets.append([day, 0, 0.0, 0.0])
            bucket = buckets[-1]
            bucket[1] += 1
            delta = x - bucket[2]
            bucket[2] += delta / bucket[1]
            bucket[3] += delta * (x - bucket[2])
        self._save()

    def purge(self, now: float) -> int:
        """Delete the days past retention (``retention.stats_days``); how many were deleted."""
        removed = 0
        for key in list(self._table):
            slots = self._table[key]
            for slot in list(slots):
                kept = [b for b in slots[slot] if self._kept(b, now)]
                removed += len(slots[slot]) - len(kept)
                if kept:
                    slots[slot] = kept
                else:
                    del slots[slot]
            if not slots:
                del self._table[key]
        if removed:
            self._save()
        return removed

    def _save(self) -> None:
        state = {"version": VERSION, "timezone": self.settings.timezone, "metrics": self._table}
        atomic_write_json(self.path, state)


def _is_table(metrics: object, slot_ok: Callable[[object], bool]) -> bool:
    return isinstance(metrics, dict) and all(
        isinstance(slots, dict) and all(slot_ok(v) for v in slots.values()) for slots in metrics.values()
    )


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_v1_slot(v: object) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v) and v[0] >= 1


def _is_slot(v: object) -> bool:
    return isinstance(v, list) and all(
        isinstance(b, list) and len(b) == 4 and all(_number(x) for x in b) and b[1] >= 1 for b in v
    )
