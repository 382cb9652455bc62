"""docs/cli.md has an exit-code row for every command the CLI registers, and no row for a
command that does not exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agent.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every leaf command, nested ones as ``audit verify``."""
    found: set[str] = set()
    for action in parser._actions:  # argparse exposes subparsers no other way
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(sub, f"{prefix}{name} ") or {f"{prefix}{name}"}
    return found


def documented() -> set[str]:
    table = DOC.read_text(encoding="utf-8").split("Scripts and units")[0]
    return set(re.findall(r"^\| `([a-z][a-z -]*)`", table, flags=re.MULTILINE))


def test_every_command_has_an_exit_code_row() -> None:
    registered = commands(build_parser())
    assert {"run", "verify", "audit verify", "policy explain"} <= registered
    assert registered == documented()
