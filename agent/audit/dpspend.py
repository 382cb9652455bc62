"""The day's differential-privacy spend, read back from the audit log.

The budget file (``dp_budget.json``) is the accountant's working copy; the audit log is the
signed record. When the file is missing the accountant asks this module: the sum of
``dp_spent_micro`` over the ``window`` entries whose window started on that UTC day (the day the
accountant charges), and the lowest ``dp_daily_budget_milli`` among the policies recorded on it
(``segment``, ``start`` and ``policy_change`` entries). Only complete lines are read; the log
rotates at UTC midnight, so reading stops at the first segment, newest first, that ended
before the day began.

A spend persisted in the file just before a crash, whose ``window`` entry the crash prevented,
is not in the log: if the file is lost too, that one window's epsilon is missing from the
rebuild.
"""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

from agent.audit.log import DAY_MS
from agent.audit.store import iter_lines, list_segments

POLICY_KINDS = ("segment", "start", "policy_change")


def _day_start_ms(day: str) -> int:
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1000


def _policy(entry: dict[str, Any]) -> dict[str, Any] | None:
    data = entry["data"]
    policy: dict[str, Any] | None = data.get("policy")
    return policy


def logged_spend(directory: Path, day: str) -> tuple[int, int | None]:
    """What the audit log in ``directory`` says about ``day`` (YYYY-MM-DD, UTC): epsilon spent
    and the lowest daily budget recorded (both × 10^6; the budget None when none is recorded)."""
    start = _day_start_ms(day)
    end = start + DAY_MS
    spent = 0
    budgets: list[int] = []
    if not directory.is_dir():
        return 0, None
    for _, path in reversed(list_segments(directory)):
        last_ts = 0
        for line in iter_lines(path):
            entry = json.loads(line)
            ts = entry["ts"]
            last_ts = max(last_ts, ts)
            if entry["kind"] == "window":
                w = entry["data"]
                if start <= w["window_start_ms"] < end:
                    spent += w.get("dp_spent_micro") or 0
            elif entry["kind"] in POLICY_KINDS and start <= ts < end:
                policy = _policy(entry)
                budget = policy.get("dp_daily_budget_milli") if policy else None
                if budget is not None:
                    budgets.append(budget * 1000)
        if last_ts < start:
            break
    return spent, (min(budgets) if budgets else None)
