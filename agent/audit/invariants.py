"""The promises an auditor checks inside the entries, against the policy the log itself recorded.

- no file in state_dir looked like an image or a video when a window closed
  (``frames.state_image_files == 0``, and the scan ran: ``state_files_scanned >= 1``);
- every captured frame is accounted for, each figure counted where it happened:
  captured + queued before = analysed + dropped + discarded + queued (``queued`` restarts at 0
  with each ``start``; the first kept segment's ``segment`` entry records the figure it starts
  from, so a purge does not break the chain);
- no frame lived longer than the bound (``--max-lifetime-ms`` or the policy's
  ``max_frame_lifetime_ms``), and p99 ≤ max;
- no window was published with fewer than k people, and k is never below the policy's;
- the differential-privacy spend of a UTC day (``dp_spent_micro`` of the windows that started
  on it, as the accountant charges it) never exceeds the daily budget in force: the lowest
  ``dp_daily_budget_milli`` among the policies in force at that day's spends (a budget raised
  during a day applies from the next, a lowered one at once: agent/analytics/dp.py);
- purges only removed segments older than the retention in force, contiguously from the
  start, and the entries that are gone are exactly the ones a purge entry records.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from agent.audit.entries import Entry
from agent.audit.log import DAY_MS


class Invariants:
    """Feed entries in order with ``check``; ``finish`` checks what needs the whole log."""

    def __init__(self, max_lifetime_ms: int | None = None) -> None:
        self.override_ms = max_lifetime_ms
        self.policy: dict[str, Any] | None = None
        self.last_start: dict[str, Any] | None = None
        self.first = 0
        self.purges: list[tuple[int, dict[str, Any]]] = []
        self.last_ts = 0
        self.clock_steps_back = 0
        self.queued = 0
        self.legacy_frames = 0
        self.measured_frames = 0
        self.device_ids: set[str] = set()
        self.dp_spent: dict[int, int] = {}
        """Micro-epsilon spent per UTC day (days since the epoch) of the windows' start."""
        self.dp_budget: dict[int, int] = {}
        """The lowest daily budget (micro-epsilon) in force at a spend on that day."""
        self.dp_over: set[int] = set()
        self.running: bool | None = False
        """A start was read and no stop after it (the log's last run is still running); None
        while unknown (the first kept segment's head copies the last start, which may have
        stopped since)."""
        self.unclean: list[tuple[int, int]] = []
        """(index, ts_ms) of each start that came while the run before it had written no stop:
        it was killed, crashed or lost power, and the frames it captured after its last
        ``frames`` entry are in no entry."""
        self._checks = {
            "start": self._start,
            "stop": self._stop,
            "policy_change": self._start,
            "frames": self._frames,
            "window": self._window,
            "purge": self._purge,
        }

    def starts_at(self, first: int, segment: dict[str, Any]) -> None:
        """The retained log begins at ``first`` with the context its segment entry records."""
        self.first = first
        self.policy = segment["policy"]
        self.last_start = segment["start"]
        self.queued = segment.get("queued") or 0  # absent before it was recorded: 0, as then
        # A segment begins at a rotation inside a run, or at a start after a stop: its head
        # copies the last start either way, so whether that run stopped is not known here.
        self.running = None if self.last_start is not None else False
        if self.last_start is not None:
            self.device_ids.add(self.last_start["device_id"])

    def check(self, entry: Entry) -> list[str]:
        problems: list[str] = []
        if entry.ts_ms < self.last_ts:  # a Pi has no RTC: NTP may step the clock back
            self.clock_steps_back += 1
        self.last_ts = max(self.last_ts, entry.ts_ms)
        rule = self._checks.get(entry.kind)
        if rule is not None:
            problems += rule(entry)
        return problems

    def _start(self, entry: Entry) -> list[str]:
        if entry.kind == "start":
            if self.running:
                self.unclean.append((entry.index, entry.ts_ms))
            self.running = True
            self.last_start = entry.data
            self.device_ids.add(entry.data["device_id"])
            self.queued = 0  # a new process: nothing waits in its queue yet
        self.policy = entry.data["policy"]
        return []

    def _stop(self, _entry: Entry) -> list[str]:
        self.running = False
        return []

    def _frames(self, entry: Entry) -> list[str]:
        d = entry.data
        out = self._legacy_frames(d) if "pixel_bytes_persisted" in d else self._measured_frames(d)
        if d["lifetime_p99_ms"] > d["lifetime_max_ms"]:
            out.append(f"lifetime p99 {d['lifetime_p99_ms']} ms exceeds the max {d['lifetime_max_ms']} ms")
        bound = self.override_ms
        if bound is None and self.policy is not None:
            bound = self.policy["max_frame_lifetime_ms"]
        if bound is not None and d["lifetime_max_ms"] > bound:
            out.append(f"a frame lived {d['lifetime_max_ms']} ms, above the bound of {bound} ms")
        return out

    def _measured_frames(self, d: dict[str, Any]) -> list[str]:
        self.measured_frames += 1
        out = []
        if d["state_image_files"] != 0:
            out.append(
                f"{d['state_image_files']} file(s) in state_dir began with an image or video "
                "signature when the window closed (must be 0)"
            )
        if d["state_files_scanned"] == 0:
            out.append("the scan of state_dir saw no file (it always sees the audit log): it did not run")
        before, after = self.queued, d["queued"]
        fates = d["analysed"] + d["dropped"] + d["discarded"] + after
        if d["captured"] + before != fates:
            out.append(
                f"frames do not add up: captured {d['captured']} + queued before {before} != analysed "
                f"{d['analysed']} + dropped {d['dropped']} + discarded {d['discarded']} + queued {after}"
            )
        self.queued = after
        return out

    def _legacy_frames(self, d: dict[str, Any]) -> list[str]:
        """The form written before the measured fields: its pixel figure was a constant."""
        self.legacy_frames += 1
        out = []
        if self.measured_frames:
            out.append("a frames entry in the old, unmeasured form after measured ones")
        if d["pixel_bytes_persisted"] != 0:
            n = d["pixel_bytes_persisted"]
            out.append(f"frames entry says {n} bytes of pixels were persisted (must be 0)")
        if d["analysed"] + d["dropped"] + d["discarded"] != d["captured"]:
            out.append(
                f"frames do not add up: analysed {d['analysed']} + dropped {d['dropped']} + discarded "
                f"{d['discarded']} != captured {d['captured']}"
            )
        return out

    def _window(self, entry: Entry) -> list[str]:
        d = entry.data
        out = []
        if d["published"] and d["people"] < d["k"]:
            out.append(f"window published with {d['people']} people, fewer than k = {d['k']}")
        if self.policy is not None and d["k"] < self.policy["min_people"]:
            out.append(f"window used k = {d['k']}, below the policy's min_people {self.policy['min_people']}")
        return out + self._dp_spend(d)

    def _dp_spend(self, d: dict[str, Any]) -> list[str]:
        """The accountant refuses a window whose spend would take the day above its budget."""
        spent = d.get("dp_spent_micro")
        if not spent:
            return []
        day = d["window_start_ms"] // DAY_MS
        total = self.dp_spent[day] = self.dp_spent.get(day, 0) + spent
        milli = self.policy.get("dp_daily_budget_milli") if self.policy is not None else None
        if milli is not None:
            self.dp_budget[day] = min(self.dp_budget.get(day, milli * 1000), milli * 1000)
        budget = self.dp_budget.get(day)
        if budget is None or total <= budget or day in self.dp_over:
            return []
        self.dp_over.add(day)
        date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
        return [
            f"differential privacy budget overspent on {date} (UTC): the windows that started that "
            f"day spent ε {_micro(total)} (dp_spent_micro {total}), above the daily budget of ε "
            f"{_micro(budget)} in force (dp_daily_budget_milli {budget // 1000})"
        ]

    def _purge(self, entry: Entry) -> list[str]:
        d = entry.data
        out = []
        self.purges.append((entry.index, d))
        limit = entry.ts_ms - d["retention_days"] * DAY_MS
        if d["cutoff_ms"] > limit:
            out.append(
                f"purge cutoff {d['cutoff_ms']} is later than {d['retention_days']} days before the purge"
            )
        if self.policy is not None and d["retention_days"] < self.policy["audit_days"]:
            out.append(
                f"purge used {d['retention_days']} days of retention, less than the policy's "
                f"{self.policy['audit_days']}"
            )
        expect = d["segments"][0]["first"]
        for seg in d["segments"]:
            if seg["last_ts_ms"] >= d["cutoff_ms"]:
                out.append(
                    f"purged {seg['name']} whose last entry ({seg['last_ts_ms']}) is not past the cutoff"
                )
            if seg["first"] != expect:
                out.append(f"purged segments are not contiguous at {seg['name']}")
            expect = seg["first"] + seg["count"]
        if expect != d["first_kept"]:
            out.append(
                f"purge says entries from {d['first_kept']} were kept but its segments end at {expect}"
            )
        return out

    def finish(self, seg_roots: dict[str, tuple[int, int, bytes]]) -> list[str]:
        """Every missing entry is covered by a purge record; segments still present match theirs."""
        out = []
        if self.first > 0 and not any(d["first_kept"] == self.first for _, d in self.purges):
            out.append(
                f"entries 0..{self.first - 1} are missing and no purge entry records their removal"
            )
        for index, d in self.purges:
            for seg in d["segments"]:
                kept = seg_roots.get(seg["name"])
                if kept is None:
                    continue
                first, count, root = kept
                recorded = (seg["first"], seg["count"], seg["root"])
                if (first, count, base64.b64encode(root).decode()) != recorded:
                    out.append(
                        f"entry {index}: purge record of {seg['name']} does not match the segment on disk"
                    )
        return out


def _micro(value: int) -> str:
    """Micro-units as a decimal: 1500000 -> '1.5'."""
    whole, frac = divmod(value, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
