"""The ``outputs`` config section: where signed messages go besides MQTT."""

from __future__ import annotations

from pydantic import Field

from agent.settings_base import Section


class OutputsConfig(Section):
    """Where signed messages go besides MQTT (``mqtt.enabled``)."""

    jsonl: str | None = Field(
        None,
        title="JSON-lines output",
        description="'-' for stdout or a file path; each line is {topic, payload}, as verify reads. "
        "A file may be rotated while the agent runs (logrotate, default or copytruncate).",
        min_length=1,
    )
