"""Base class of every config section, kept apart so subsystems can define their own sections
(``agent/<package>/settings.py``) without importing the whole config module."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors; values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
