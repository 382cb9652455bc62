"""Site rollups: per site and window, the sum of what its devices already published.

Every input is a verified, already k-anonymous device window, so the sum reveals nothing a
reader of the device topics could not add up; a device window with a suppressed breakdown
(``people: null``) adds nothing and is counted in ``suppressed_devices``. A site window is
closed ``grace_seconds`` after it ends; the first replica to insert it publishes it, signed
with its own key, so several replicas never publish one window twice.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.crypto import JSON
from agent.emotions import EMOTIONS
from agent.fleet.store import Store

logger = logging.getLogger(__name__)

MAX_SECONDS = 2**53 // 1000 - 1
"""A window's bound in Unix seconds, so that its milliseconds stay an exact JSON integer."""
ROLLUP_HORIZON_MS = 86_400_000
"""Device windows older than this are not summed (keeps the per-second query small)."""

RowKey = tuple[str, int, int]
"""(device, boot, seq) of a stored message."""


MAX_COUNT = 1_000_000
"""Most people (or votes for one emotion) one device window may report: far above what a camera
sees in a window, and low enough that a site's sum stays an exact JSON integer (a window of
2**53 - 1 people could not be signed, and ended ``collect``)."""


def _int_to(value: object, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _count(value: object) -> bool:
    return _int_to(value, MAX_COUNT)


def stats_problem(body: object) -> str | None:
    """Why a ``stats`` body cannot be summed into a site window, or None. What a rollup reads
    must be there: ``window_start`` <= ``window_end`` (Unix seconds); ``people`` null or a count;
    ``votes`` null or an object of counts (absent or null: a suppressed window). Other members
    are the device's own."""
    if not isinstance(body, Mapping):
        return "a stats body is an object"
    for name in ("window_start", "window_end"):
        value = body.get(name)
        if not _int_to(value, MAX_SECONDS):
            return f"stats body.{name} must be an integer from 0 to {MAX_SECONDS} (got {value!r:.40})"
    if body["window_end"] < body["window_start"]:
        return "stats body.window_end is before its window_start"
    return _counts_problem(body.get("people"), body.get("votes"))


def _counts_problem(people: object, votes: object) -> str | None:
    """``people`` and ``votes`` bounded counts (or null), votes named by emotions only: what a
    site window sums and signs (other names were summed and signed into it: a gender, 15,000
    made-up keys)."""
    if people is not None and not _count(people):
        return f"stats body.people must be null or an integer from 0 to {MAX_COUNT} (got {people!r:.40})"
    if votes is None:
        return None
    if not (isinstance(votes, Mapping) and all(_count(v) for v in votes.values())):
        return f"stats body.votes must be null or an object of integers from 0 to {MAX_COUNT}"
    other = next((k for k in votes if k not in EMOTIONS), None)
    if other is not None:
        return f"stats body.votes has {other!r:.40}, not an emotion ({', '.join(EMOTIONS)})"
    return None


@dataclass(frozen=True)
class SiteWindow:
    site: str
    window_start: int
    window_end: int
    devices: int
    suppressed_devices: int
    people: int
    votes: dict[str, int]

    def to_body(self) -> dict[str, JSON]:
        return {
            "site": self.site,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "devices": self.devices,
            "suppressed_devices": self.suppressed_devices,
            "people": self.people,
            "votes": dict(sorted(self.votes.items())),
        }


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One device's window from the parts its boots published (a restart inside the window
    publishes the part before it at the stop): people and votes of the parts that were not
    suppressed added up; suppressed only if every part was."""
    shown = [p for p in parts if p.get("people") is not None and p.get("votes") is not None]
    votes: Counter[str] = Counter()
    for part in shown:
        votes.update({str(k): int(v) for k, v in part["votes"].items()})
    return {
        "window_start": parts[0]["window_start"],
        "window_end": max(int(p["window_end"]) for p in parts),
        "people": sum(int(p["people"]) for p in shown) if shown else None,
        "votes": dict(votes) if shown else None,
    }


def sum_windows(site: str, bodies: Iterable[Mapping[str, Any]]) -> SiteWindow | None:
    """Add device windows that share one ``window_start`` (one per device); None for no input."""
    rows = list(bodies)
    if not rows:
        return None
    votes: Counter[str] = Counter()
    people = suppressed = 0
    for body in rows:
        if body.get("people") is None or body.get("votes") is None:
            suppressed += 1
            continue
        people += int(body["people"])
        votes.update({str(k): int(v) for k, v in body["votes"].items()})
    return SiteWindow(
        site,
        int(rows[0]["window_start"]),
        max(int(b["window_end"]) for b in rows),
        len(rows),
        suppressed,
        people,
        dict(votes),
    )


def due_rollups(
    store: Store,
    sites: Mapping[str, list[str]],
    now_ms: int,
    grace_ms: int,
    unreadable: set[RowKey] | None = None,
) -> list[SiteWindow]:
    """Site windows that ended more than ``grace_ms`` ago and are not rolled up yet.

    A stored stats body that cannot be summed (stored before the receiver checked their shape)
    is left out, logged once and added to ``unreadable``: it must not stop every rollup."""
    out: list[SiteWindow] = []
    seen = unreadable if unreadable is not None else set()
    for site, devices in sites.items():
        if not devices:
            continue
        marks = ", ".join("?" for _ in devices)
        rows = store.query(  # only the last day: an older window that was never summed stays so
            "SELECT device, boot, seq, body FROM messages WHERE typ = 'stats' AND received_ms >= ? "  # noqa: S608 - placeholders only
            f"AND device IN ({marks})",
            [now_ms - ROLLUP_HORIZON_MS, *devices],
        )
        done = {int(r[0]) for r in store.query("SELECT window_start FROM rollups WHERE site = ?", (site,))}
        by_start: dict[int, dict[str, dict[int, tuple[int, dict[str, Any]]]]] = {}
        """window_start -> device -> boot -> (seq, body): the last body of each boot."""
        for device, boot, seq, text in rows:
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            problem = stats_problem(body)
            if problem is not None:
                key = (str(device), int(boot), int(seq))
                if key not in seen:
                    seen.add(key)
                    logger.warning(
                        "site rollup leaves out a stats message of %s (boot %d, seq %d): %s", *key, problem
                    )
                continue
            start = int(body["window_start"])
            if start not in done and int(body["window_end"]) * 1000 + grace_ms <= now_ms:
                # within a boot, the last body it published for the window stands (one sent
                # again must not count twice); the parts of different boots (a restart inside
                # the window) are added up, the device counted once (``merge_parts``)
                boots = by_start.setdefault(start, {}).setdefault(str(device), {})
                if int(boot) not in boots or boots[int(boot)][0] < int(seq):
                    boots[int(boot)] = (int(seq), body)
        for start in sorted(by_start):
            parts = [[body for _, body in boots.values()] for boots in by_start[start].values()]
            window = sum_windows(site, [merge_parts(p) for p in parts])
            if window is not None:
                out.append(window)
    return out


def claim(store: Store, window: SiteWindow, receiver: str) -> bool:
    """Insert the rollup; True only for the replica whose insert made the row."""
    with store.transaction() as cur:
        store.execute(
            cur,
            "INSERT INTO rollups (site, window_start, devices, body, receiver) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (site, window_start) DO NOTHING",
            (window.site, window.window_start, window.devices, json.dumps(window.to_body()), receiver),
        )
        return bool(cur.rowcount == 1)


def site_discovery(site: str, receiver_id: str, prefix: str = "homeassistant") -> tuple[str, bytes]:
    """Home Assistant device-based discovery (HA 2024.11+) for a site's rollup topic."""
    state = f"emotion-agent/site/{site}/stats"
    node = f"emotion_agent_site_{site.replace('-', '_')}"
    device = {"identifiers": [node], "name": f"emotion-agent site {site}", "manufacturer": "emotion-agent",
              "model": f"site rollup (receiver {receiver_id})"}
    cmps: dict[str, dict[str, object]] = {}
    for field, name in (("people", "People"), ("devices", "Cameras reporting"),
                        ("suppressed_devices", "Cameras suppressed")):
        cmps[field] = {
            "p": "sensor", "name": name, "unique_id": f"{node}_{field}", "state_topic": state,
            "value_template": f"{{{{ value_json.body.{field} }}}}", "state_class": "measurement", "qos": 1,
        }
    payload = {"dev": device, "o": {"name": "emotion-agent collect"}, "cmps": cmps, "state_topic": state}
    return f"{prefix}/device/{node}/config", json.dumps(payload, sort_keys=True).encode("utf-8")
