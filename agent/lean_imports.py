"""Keep modules the agent never uses out of the process: each one stays in memory for good.

pydantic looks for plugins (``importlib.metadata.entry_points``) the first time a model is
built, and the loader module imports ``importlib.metadata`` at its top, before it reads
``PYDANTIC_DISABLE_PLUGINS``: with it come ``email``, ``zipfile``, ``csv`` and more, 0.8 MB of
the peak RSS of ``run`` (docs/vision.md, "Peak RSS"). The agent uses no pydantic plugin, and a
third-party plugin seeing every validated config is not wanted in a privacy-first agent either,
so the CLI puts a loader that finds none in its place before any model is built.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"
"""The module pydantic imports lazily to discover plugins (pydantic 2.x,
``pydantic/plugin/_schema_validator.py``: ``from ._loader import get_plugins``)."""


def _no_plugins() -> Iterable[object]:
    return ()


def skip_pydantic_plugins() -> bool:
    """Stand in for pydantic's plugin loader (as ``PYDANTIC_DISABLE_PLUGINS=__all__`` would, without
    the import); False when the real one is loaded already (a model was built before)."""
    if PYDANTIC_PLUGIN_LOADER in sys.modules:
        return False
    loader = types.ModuleType(PYDANTIC_PLUGIN_LOADER, "pydantic plugins: none (agent.lean_imports)")
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[PYDANTIC_PLUGIN_LOADER] = loader
    return True
