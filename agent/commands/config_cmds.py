"""``check-config`` and ``config-schema``: validate a config and print its JSON Schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent import state_dir
from agent.clock import SystemClock
from agent.config import json_schema as config_json_schema
from agent.config import load_config
from agent.preflight import check_files, check_source
from agent.privacy.policy import require_allowed, site_today


def register(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a config file and explain every error")
    p.add_argument("-c", "--config", required=True, help="path to the YAML config")
    p.set_defaults(func=check_config)
    s = sub.add_parser("config-schema", help="print the config's JSON Schema")
    s.set_defaults(func=print_schema)


def check_config(args: argparse.Namespace) -> int:
    """Schema first (every problem with its line), then the site policy the service enforces,
    then the files the config names, read as ``run`` reads them (key, password, certificates, a
    clip as ``camera.source``, the models with their hashes), the state folder, and for
    ``vision.accelerator: coral`` the Edge TPU model, library and device. Core dumps go off
    first, as in ``run``: opening a clip may decode its first frame."""
    from agent.privacy.coredump import forbid_core_dumps  # noqa: PLC0415 - only this command needs them
    from agent.vision.edgetpu import check_accelerator  # noqa: PLC0415
    from agent.vision.pipeline import VisionPipeline  # noqa: PLC0415

    cfg = load_config(args.config)
    decision = require_allowed(cfg, site_today(cfg, SystemClock()))  # the signage date too, as `run`
    forbid_core_dumps(announce=False)
    check_files(cfg, Path(args.config))
    check_source(cfg.camera.source)
    check_accelerator(cfg.vision)
    # hashes and tensor shapes as run loads them, on the CPU: a Coral is held by the running service
    # (check_accelerator above checked the compiled model's hash, the library and the device)
    VisionPipeline.from_config(cfg.vision.model_copy(update={"accelerator": "cpu"})).close()
    state_dir.check(cfg.state_dir)
    print(f"{args.config}: valid (schema_version {cfg.schema_version}, device {cfg.device_id})")
    for note in decision.notes:
        print(f"  policy: {note}")
    for warning in cfg.mqtt.warnings():
        print(f"  warning: {warning}")
    return 0


def print_schema(args: argparse.Namespace) -> int:
    json.dump(config_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
