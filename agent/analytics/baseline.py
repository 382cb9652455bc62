"""A rolling baseline per hour of the week, so each camera position is compared to its own normal.

For every metric a baseline-mode rule reads (e.g. the share of angry + fear), each of the 168
hours of the week (in the site's time zone, Monday 00:00 = slot 0) keeps a count, a mean and
a variance. The first ``max_samples`` windows of a slot are averaged exactly (Welford); after
that each new window weighs 1 / max_samples and older ones fade exponentially (West 1979).
A slot answers only once it has ``min_samples`` windows. The table lives in ``state_dir``
(``alert_baseline.json``, atomic writes) and holds aggregates only: no person, no id.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.analytics.dp import atomic_write_json
from agent.analytics.settings import BaselineConfig
from agent.errors import PayloadError

HOURS_PER_WEEK = 168


@dataclass(frozen=True, slots=True)
class SlotStats:
    """What a slot knows: windows seen, mean and standard deviation (metric integer units)."""

    n: int
    mean: float
    stdev: float


class Baseline:
    """Per-metric, per-hour-of-week rolling mean and variance, persisted in ``state_dir``."""

    FILE_NAME = "alert_baseline.json"

    def __init__(self, state_dir: Path, settings: BaselineConfig) -> None:
        self.path = Path(state_dir) / self.FILE_NAME
        self.settings = settings
        self._zone = ZoneInfo(settings.timezone)
        self._table: dict[str, dict[str, list[float]]] = self._load()

    def _load(self) -> dict[str, dict[str, list[float]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PayloadError(
                f"{self.path}: cannot read the alert baseline ({exc}); remove the file to start "
                "a new baseline (alerts in baseline mode wait for min_samples windows again)"
            ) from exc
        metrics = data.get("metrics") if isinstance(data, dict) else None
        if not isinstance(metrics, dict) or not all(
            isinstance(slots, dict) and all(isinstance(v, list) and len(v) == 3 for v in slots.values())
            for slots in metrics.values()
        ):
            raise PayloadError(
                f'{self.path}: the alert baseline is damaged (expected {{"metrics": {{key: {{slot: '
                "[n, mean, variance]}}}}}}); remove the file to start a new baseline"
            )
        return metrics

    def slot(self, t: float) -> int:
        """Hour of the week of Unix time ``t`` in the site's zone: Monday 00h = 0, Sunday 23h = 167."""
        local = datetime.fromtimestamp(t, UTC).astimezone(self._zone)
        return local.weekday() * 24 + local.hour

    def stats(self, key: str, t: float) -> SlotStats | None:
        """The slot of ``t`` for metric ``key``, or None until it has ``min_samples`` windows."""
        entry = self._table.get(key, {}).get(str(self.slot(t)))
        if entry is None or entry[0] < self.settings.min_samples:
            return None
        n, mean, var = entry
        return SlotStats(int(n), mean, math.sqrt(max(var, 0.0)))

    def update(self, values: dict[str, int], t: float) -> None:
        """Fold one window's values (metric key -> integer value) into the slot of ``t``; persist."""
        if not values:
            return
        slot = str(self.slot(t))
        for key, x in values.items():
            n, mean, var = self._table.setdefault(key, {}).get(slot, [0, 0.0, 0.0])
            n = int(n) + 1
            alpha = 1.0 / min(n, self.settings.max_samples)
            delta = x - mean
            mean += alpha * delta
            var = (1.0 - alpha) * (var + alpha * delta * delta)
            self._table[key][slot] = [n, mean, var]
        state = {"version": 1, "timezone": self.settings.timezone, "metrics": self._table}
        atomic_write_json(self.path, state)
