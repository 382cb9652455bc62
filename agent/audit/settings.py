"""The ``audit`` config section: when checkpoints are signed and segments rotate."""

from __future__ import annotations

from pydantic import Field

from agent.settings_base import Section


class AuditConfig(Section):
    """Checkpoint and segment policy of the audit log (retention is ``retention.audit_days``)."""

    checkpoint_every_entries: int = Field(
        100,
        ge=1,
        le=1_000_000,
        title="Sign a checkpoint every N entries",
        description="A signed tree head after this many new entries (also every T minutes and at stop).",
    )
    checkpoint_every_minutes: int = Field(
        10,
        ge=1,
        le=1440,
        title="Sign a checkpoint every T minutes",
        description="A signed tree head at least this often while entries are being added.",
    )
    segment_max_entries: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        title="Entries per segment file",
        description="A segment also rotates at UTC midnight; retention deletes whole old segments.",
    )
    max_frame_lifetime_ms: int = Field(
        1_000,
        ge=1,
        le=600_000,
        title="Longest a frame may live (ms)",
        description="Capture to zeroing; recorded in the start entry and checked by `audit verify`.",
    )
