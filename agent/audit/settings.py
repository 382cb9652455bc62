"""The ``audit`` config section: when checkpoints are signed and segments rotate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from agent.settings_base import Section

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_WITNESSES = 16
"""More than a site runs: each listed key is tried on every cosigned copy that arrives."""


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
    witnesses: list[str] = Field(
        default_factory=list,
        max_length=MAX_WITNESSES,
        title="Witnesses whose cosignatures the device keeps",
        description=(
            "Verifier keys NAME+KEYID+BASE64, as `audit verify --witness` takes them. Set, the device "
            "keeps only cosigned checkpoints a listed witness signed, so junk copies sent to it "
            "cannot crowd out the witness's; empty, it keeps any 3 copies of each checkpoint."
        ),
    )

    @field_validator("witnesses")
    @classmethod
    def _vkeys(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        from agent.audit.cosignature import (  # noqa: PLC0415 - `bench` loads configs without cryptography
            described,
            parse_vkey,
            repeated,
        )

        keys = []
        for i, vkey in enumerate(value):
            try:
                keys.append(parse_vkey(vkey))
            except ValueError as exc:
                raise ValueError(f"item {i + 1} ({_shown(vkey)}): {exc}") from exc
        twice = repeated(keys)
        if twice is not None:
            first, again = twice
            raise ValueError(
                f"item {again + 1} is item {first + 1} again, {described(*keys[first])}: list each "
                "witness key once (was another witness's key meant?)"
            )
        return value

    @property
    def witness_keys(self) -> list[tuple[str, Ed25519PublicKey]]:
        """``witnesses`` as (name, key), checked at load."""
        from agent.audit.cosignature import parse_vkey  # noqa: PLC0415 - as in _vkeys

        return [parse_vkey(v) for v in self.witnesses]


def _shown(vkey: str) -> str:
    """The whole value (a verifier key is public), so the slip in it shows; cut only when long."""
    return repr(vkey) if len(vkey) <= 200 else f"{vkey[:200]!r}... ({len(vkey)} characters)"
