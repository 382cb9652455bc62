"""The ``outputs`` config section: where signed messages go besides MQTT."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from agent.settings_base import Section, in_config_folder


class OutputsConfig(Section):
    """Where signed messages go besides MQTT (``mqtt.enabled``)."""

    jsonl: str | None = Field(
        None,
        title="JSON-lines output",
        description="'-' for stdout or a file path (relative: beside the config file); each line is "
        "{topic, payload}, as verify reads. "
        "A file may be rotated while the agent runs (logrotate, default or copytruncate).",
        min_length=1,
    )

    @field_validator("jsonl")
    @classmethod
    def _in_config_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A path in a text key, read as every path key: ``~`` refused (it failed only at start),
        relative beside the config file."""
        if value is None or value == "-":
            return value
        return str(in_config_folder(Path(value), info))
