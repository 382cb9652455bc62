"""The CLI imports only the module of the command asked for, and its map of commands is right."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from agent.cli import COMMANDS, build_parser, requested_command


def test_every_module_registers_exactly_the_commands_mapped_to_it() -> None:
    for module in dict.fromkeys(COMMANDS.values()):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        assert set(sub.choices) == {name for name, m in COMMANDS.items() if m == module}, module


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["bench", "--json"], "bench"),
        (["--log-level", "DEBUG", "run", "-c", "x.yaml"], "run"),
        (["--log-level=DEBUG", "--log-format", "json", "audit", "verify"], "audit"),
        (["--help", "bench"], None),
        (["--version"], None),
        (["bnch"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_after_global_options(argv: list[str], command: str | None) -> None:
    assert requested_command(argv) == command


def test_without_a_known_command_help_lists_every_command() -> None:
    parser = build_parser(None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


def test_bench_loads_neither_mqtt_nor_cryptography() -> None:
    """A real (2-frame) bench, then what it imported. Measured: cryptography alone is about
    10 MB of the bench's peak RSS."""
    code = (
        "import json, sys\n"
        "from agent.cli import main\n"
        "code = main(['bench', '--frames', '2', '--json'])\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('paho', 'cryptography') or m == 'agent.audit.log')\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert out.returncode == 0, out.stderr
    bench_json, loaded = out.stdout.strip().splitlines()[-2:]
    assert json.loads(bench_json)["frames"] == 2  # it ran the pipeline, not just parsed options
    assert json.loads(loaded) == {"code": 0, "heavy": []}
