"""The ``emotion-agent`` command: a thin dispatcher over ``agent.commands.*``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Only the module of the command asked for is imported (``COMMANDS``):
each pulls in what its command needs (MQTT, cryptography, OpenCV, LiteRT), and a process that
imports them all pays for all of them in memory (``bench`` measures its own peak RSS). Without a
known command (``--help``, a typo) every module is registered, so help lists them all. Errors
the agent raises on purpose become one line on stderr and the exit code of their class (2 bad
input, 1 runtime failure), never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import EXIT_RUNTIME, EmotionAgentError
from agent.lean_imports import skip_pydantic_plugins
from agent.logs import configure_logging

logger = logging.getLogger(__name__)

COMMANDS: dict[str, str] = {
    "check-config": "agent.commands.config_cmds",
    "config-schema": "agent.commands.config_cmds",
    "policy": "agent.commands.policy_cmds",
    "provision": "agent.commands.provision",
    "keygen": "agent.commands.keys_cmds",
    "pubkey": "agent.commands.keys_cmds",
    "keys": "agent.commands.keys_cmds",
    "verify": "agent.commands.verify",
    "audit": "agent.commands.audit_cmds",
    "bench": "agent.commands.bench",
    "analyze": "agent.commands.analyze",
    "run": "agent.commands.run",
    "command": "agent.commands.command_cmds",
    "collect": "agent.commands.collect",
}
"""Top-level command -> the module that registers it (a test checks it against the modules)."""

COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))

GLOBAL_OPTIONS_WITH_VALUE = ("--log-level", "--log-format")


def requested_command(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` when it names a known command and comes before any
    ``--help``/``--version``; else None (then every command is registered)."""
    it = iter(argv)
    for token in it:
        if token in GLOBAL_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
        elif token.split("=", 1)[0] not in GLOBAL_OPTIONS_WITH_VALUE:
            return None  # -h, --help, --version or a typo: argparse answers with everything
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``command`` only the subparser(s) of that command's module."""
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
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    skip_pydantic_plugins()  # before a command module builds its config models
    parser = build_parser(requested_command(argv))
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
        _drop_stdout()
        return 0
    except OSError as exc:  # the system refused a write or read no error above names (a full disk)
        logger.debug("the command failed on an OS error", exc_info=True)
        if exc.errno in OUTPUT_ERRNOS:
            _drop_stdout()
        print(f"emotion-agent: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return code


OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG})
"""Errors that leave what is still buffered for stdout unwritable as well."""


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit neither fails again
    nor prints an 'Exception ignored' message after our one line."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured in tests): nothing to do
        pass
