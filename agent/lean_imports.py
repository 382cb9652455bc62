"""Keep modules the agent never uses out of the process: each one stays in memory for good.

pydantic looks for plugins (``importlib.metadata.entry_points``) the first time a model is
built, and the loader module imports ``importlib.metadata`` at its top, before it reads
``PYDANTIC_DISABLE_PLUGINS``: with it come ``email``, ``zipfile``, ``csv`` and more, 0.8 MB of
the peak RSS of ``run`` (docs/vision.md, "Peak RSS"). The agent uses no pydantic plugin, and a
third-party plugin seeing every validated config is not wanted in a privacy-first agent either,
so the CLI puts a loader that finds none in its place before any model is built.

paho imports ``urllib.request`` at its top, and with it ``http.client``, ``email.parser`` and
``tempfile``: 1 MB of anonymous memory in ``run`` with MQTT on. It reads that module only to look
for a proxy through PySocks, and not at all when PySocks is not installed, so
:func:`import_paho_client` imports paho without it then.
"""

from __future__ import annotations

import importlib
import importlib.util
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


PAHO_CLIENT = "paho.mqtt.client"
URLLIB_REQUEST = "urllib.request"
PROXY_LIBRARY = "socks"
"""PySocks: with it installed paho reads ``urllib.request`` (``getproxies``, ``proxy_bypass``)
in ``Client._get_proxy``; without it that method returns None before, and nothing else in paho
uses ``urllib.request`` (``tests/test_lean_imports.py`` checks paho's source)."""


def import_paho_client() -> types.ModuleType:
    """``paho.mqtt.client``; imported for the first time without ``urllib.request`` when PySocks
    is not installed (a stand-in takes its place in ``sys.modules`` while paho runs its
    ``import urllib.request``, and is removed again). A later ``import urllib.request`` anywhere
    loads the real module, which paho then sees too (``urllib.request`` is an attribute of the
    ``urllib`` package it holds). With PySocks installed, or ``urllib.request`` already loaded,
    paho is imported as it is."""
    if (
        PAHO_CLIENT in sys.modules
        or URLLIB_REQUEST in sys.modules
        or importlib.util.find_spec(PROXY_LIBRARY) is not None
    ):
        return importlib.import_module(PAHO_CLIENT)
    stand_in = types.ModuleType(URLLIB_REQUEST, "not loaded: paho reads it only with PySocks (lean_imports)")
    sys.modules[URLLIB_REQUEST] = stand_in
    try:
        return importlib.import_module(PAHO_CLIENT)
    finally:
        if sys.modules.get(URLLIB_REQUEST) is stand_in:
            del sys.modules[URLLIB_REQUEST]
