"""paho's client module, for every agent module that uses paho: imported first through
``agent.lean_imports.import_paho_client``, so without ``urllib.request`` (which paho reads only
to find a proxy through PySocks; docs/vision.md, "Peak RSS")."""

from __future__ import annotations

from agent.lean_imports import import_paho_client

import_paho_client()

import paho.mqtt.client as paho  # noqa: E402 - after import_paho_client, which imports it first

__all__ = ["paho"]
