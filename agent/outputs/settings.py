"""The ``outputs`` config section: where signed messages go besides MQTT."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from agent.settings_base import Section, tilde_problem


class OutputsConfig(Section):
    """Where signed messages go besides MQTT (``mqtt.enabled``)."""

    jsonl: str | None = Field(
        None,
        title="JSON-lines output",
        description="'-' for stdout or a file path; each line is {topic, payload}, as verify reads. "
        "A file may be rotated while the agent runs (logrotate, default or copytruncate).",
        min_length=1,
    )

    @field_validator("jsonl")
    @classmethod
    def _full_path(cls, value: str | None) -> str | None:
        """A path in a text key: ``~`` is refused as in every path key (it failed only at start)."""
        problem = None if value is None or value == "-" else tilde_problem(Path(value))
        if problem:
            raise ValueError(problem)
        return value
