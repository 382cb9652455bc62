"""``emotion-agent run -c CONFIG``: the long-running service (what systemd starts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.privacy.coredump import forbid_core_dumps
from agent.privacy.heap import unmap_freed_frames


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the agent: camera, vision, windows, signed outputs (SIGHUP reloads the config)",
    )
    p.add_argument("-c", "--config", required=True, help="path to the YAML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Once the config is read, and before a camera or a model can put a frame in memory, core
    dumps go off and freed frame buffers are set to leave the process. A SIGUSR1 or SIGHUP from
    here on (the service's imports, the config, the audit log's check) is held, not fatal."""
    from agent.service_signals import EarlySignals  # noqa: PLC0415

    early = EarlySignals()
    early.install()
    try:
        from agent.service import Service  # noqa: PLC0415 - keeps `--help` fast and model-free

        path = Path(args.config)
        cfg = load_config(path)
        forbid_core_dumps()
        unmap_freed_frames()
        service = Service(cfg, path)
        service.signals.early = early
        return service.run()
    finally:
        early.restore()
