"""The ``emotion-agent`` command: a thin dispatcher over ``agent.commands.*``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Errors the agent raises on purpose become one line on stderr and the
exit code of their class (2 bad input, 1 runtime failure), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import EXIT_RUNTIME, EmotionAgentError
from agent.logs import configure_logging

logger = logging.getLogger(__name__)

COMMAND_MODULES = [
    "agent.commands.config_cmds",
    "agent.commands.policy_cmds",
    "agent.commands.provision",
    "agent.commands.keys_cmds",
    "agent.commands.verify",
    "agent.commands.audit_cmds",
    "agent.commands.bench",
    "agent.commands.analyze",
    "agent.commands.run",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-agent",
        description="Privacy-first facial-emotion statistics: images never leave RAM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json for log shippers"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
    except EmotionAgentError as exc:
        print(f"emotion-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except BrokenPipeError:
        return 0
    return code
