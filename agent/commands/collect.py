"""``emotion-agent collect -c fleet.yaml``: a fleet receiver and witness (docs/fleet.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.fleet.settings import load_fleet_settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "collect",
        help="receive, verify, store and witness what devices publish (a fleet receiver replica)",
        description="Verify every device message against the registry, store it once in SQLite or "
        "PostgreSQL, cosign consistent audit checkpoints, publish site rollups, and serve /metrics, "
        "/healthz and a fleet page. Exit 2 for a bad config or key. Details: docs/fleet.md.",
    )
    p.add_argument("-c", "--config", required=True, help="path to the receiver's YAML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.fleet.service import FleetService  # noqa: PLC0415 - keeps `--help` light

    path = Path(args.config)
    return FleetService(load_fleet_settings(path), config_dir=path.parent).run()
