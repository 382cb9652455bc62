"""What the spool hands out: a queued message, a drop report, backlog figures.

Apart from :mod:`agent.transport.spool` so that the modules that only read these values (the row
check, the drop tally, the service) do not import SQLite. Pure standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DropReason = Literal["retention", "size_cap", "refused_by_broker", "quarantined"]


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One message waiting for its PUBACK; ``id`` orders the backlog."""

    id: int
    topic: str
    payload: bytes
    retain: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class DropReport:
    """What a purge removed, for the audit log: counts and times, never payloads."""

    reason: DropReason
    count: int
    bytes: int
    topics: dict[str, int] = field(default_factory=dict)
    oldest_ms: int = 0
    newest_ms: int = 0

    def to_body(self) -> dict[str, object]:
        """Integers and strings only, ready for a signed envelope."""
        return {
            "reason": self.reason,
            "count": self.count,
            "bytes": self.bytes,
            "topics": dict(sorted(self.topics.items())),
            "oldest_ms": self.oldest_ms,
            "newest_ms": self.newest_ms,
        }


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Backlog figures for the health message."""

    backlog: int
    bytes: int
    oldest_ms: int | None
    dropped: dict[str, int]
