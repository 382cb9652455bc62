"""The discovery topics the last run announced, kept in ``state_dir`` between runs.

Switching ``mqtt.discovery.mode`` (or renaming an alert rule) leaves retained configs of the
old form on the broker, and Home Assistant would show those entities forever. The next run
reads this list and clears exactly the topics it no longer uses (``discovery.retractions``).
A missing or unreadable file means "unknown": the other mode's topics are cleared then.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.atomic import write_atomic

logger = logging.getLogger(__name__)

FILE_NAME = "discovery-announced.json"


def load_announced(state_dir: Path) -> list[str] | None:
    """The topics announced last time, or None when there is no usable record."""
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
    return topics


def save_announced(state_dir: Path, topics: list[str]) -> None:
    """Record what this run announces; a failure is logged (the next run clears more, not less)."""
    path = state_dir / FILE_NAME
    try:
        write_atomic(path, (json.dumps({"topics": sorted(topics)}, indent=1) + "\n").encode())
    except OSError as exc:
        logger.warning("cannot record the announced discovery topics in %s: %s", path, exc)
