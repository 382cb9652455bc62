"""``policy explain``: what this device will and will not do, in words an installer can post."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from agent.clock import SystemClock
from agent.commands.policy_explain import render
from agent.config import load_config
from agent.privacy.policy import PolicyRefused, evaluate_policy, site_today


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="site policy: what the device may do here")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True
    e = psub.add_parser(
        "explain",
        help="print in plain language what this device does, what leaves it, how long data is "
        "kept and which rules applied; exit 2 if the policy refuses",
    )
    e.add_argument("-c", "--config", required=True, help="path to the YAML config")
    e.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        help="date (YYYY-MM-DD) to check the signage confirmation against; default: today at the "
        "site (the schedule's time zone, else UTC), the date the service checks",
    )
    e.set_defaults(func=explain)


def explain(args: argparse.Namespace) -> int:
    """Print the explanation; when refused, print it too, then fail with the refusals (exit 2)."""
    cfg = load_config(args.config)
    today = args.today or site_today(cfg, SystemClock())  # as the service: not the machine's zone
    decision = evaluate_policy(cfg, today)
    sys.stdout.write(render(cfg, decision))
    if not decision.allowed:
        raise PolicyRefused(decision)
    return 0
