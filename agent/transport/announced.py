"""What the last run announced, kept in ``state_dir`` between runs.

Switching ``mqtt.discovery.mode`` (or renaming an alert rule) leaves retained configs of the
old form on the broker, and Home Assistant would show those entities forever. The next run
reads this record and clears exactly the topics it no longer uses (``discovery.retractions``).
A missing or unreadable file means "unknown": the other mode's topics are cleared then.

In ``device`` mode a component cannot be cleared by topic: the record also keeps the device
message's components (id to platform), so the next run, or a reload, sends each one it no
longer has as ``{"p": <platform>}`` (``discovery.retired_components``), which is how Home
Assistant removes it. A record without them (an older version's) retires nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agent.atomic import write_atomic

logger = logging.getLogger(__name__)

FILE_NAME = "discovery-announced.json"


@dataclass(frozen=True, slots=True)
class Announced:
    topics: list[str]
    components: dict[str, str] = field(default_factory=dict)
    """The device message's components, live and retired, id to platform ({} without one)."""
    rules: list[str] = field(default_factory=list)
    """The alert rules announced: a rule gone by the next run loses its retained state then."""


def load_record(state_dir: Path) -> Announced | None:
    """What was announced last time, or None when there is no usable record."""
    path = state_dir / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        logger.warning("ignoring %s: %s", path, exc)
        return None
    topics = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        logger.warning("ignoring %s: no list of topics", path)
        return None
    components = data.get("components", {})
    if not isinstance(components, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in components.items()
    ):
        logger.warning("ignoring the components in %s: not a map of id to platform", path)
        components = {}
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        logger.warning("ignoring the alert rules in %s: not a list of names", path)
        rules = []
    return Announced(topics, components, rules)


def load_announced(state_dir: Path) -> list[str] | None:
    """The topics announced last time, or None when there is no usable record."""
    record = load_record(state_dir)
    return record.topics if record is not None else None


def save_announced(
    state_dir: Path, topics: list[str], components: dict[str, str] | None = None,
    rules: list[str] | None = None,
) -> None:
    """Record what this run announces; a failure is logged (the next run clears more, not less)."""
    path = state_dir / FILE_NAME
    data = {
        "topics": sorted(topics), "components": dict(sorted((components or {}).items())),
        "rules": sorted(rules or []),
    }
    try:
        write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
    except OSError as exc:
        logger.warning("cannot record the announced discovery topics in %s: %s", path, exc)
