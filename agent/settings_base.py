"""Base class of every config section, kept apart so subsystems can define their own sections
(``agent/<package>/settings.py``) without importing the whole config module."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator


def nul_problem(value: object) -> str | None:
    """Why a path or text value cannot be used: a NUL byte, which no file name, topic or host
    may hold (``os.stat`` raises ValueError on it); None when it can."""
    if isinstance(value, (str, Path)) and "\0" in str(value):
        at = str(value).index("\0")
        return f"contains a NUL byte (\\0) at character {at}; no file name or text value may hold one"
    return None


class Section(BaseModel):
    """Unknown keys are errors; values are immutable once loaded; no path or text value holds
    a NUL byte (named by its key, as every other error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        problem = nul_problem(value)
        if problem:
            raise ValueError(problem)
        return value
