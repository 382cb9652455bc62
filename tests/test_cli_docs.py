"""docs/cli.md has an exit-code row for every command the CLI registers, and no row for a
command that does not exist; for the verdict commands (verify, audit verify) and audit report,
running them on good, bad and unusable input gives the code whose column describes that case."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.cli import build_parser, main
from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer, encode, load_private_key, public_jwk
from tests.audit.helpers import ORIGIN, fill

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


def row(command: str) -> list[str]:
    """The 0, 1 and 2 cells of a command's row in the first table."""
    table = DOC.read_text(encoding="utf-8").split("Scripts and units")[0]
    (line,) = [x for x in table.splitlines() if x.startswith(f"| `{command}`")]
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert len(cells) == 4, line
    return cells[1:]


def documented_code(command: str, phrase: str) -> int:
    """The one column (0, 1 or 2) of ``command``'s row that mentions ``phrase``."""
    cols = [code for code, cell in enumerate(row(command)) if phrase in cell]
    assert len(cols) == 1, f"{phrase!r} in columns {cols} of {command}"
    return cols[0]


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Path]:
    """verify's inputs: a key, and files of good, forged, gapped and malformed lines."""
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    signer = Signer("lobby-1", load_private_key(tmp_path / "keys/device.key"), store=MemorySequenceStore())
    topic = "emotion-agent/lobby-1/stats"
    one, two, three = (signer.sign("stats", topic, {"n": i}) for i in range(3))
    files = {
        "good": [one, two],
        "forged": [one | {"body": {"n": 99}}],
        "gap": [one, three],
        "malformed": ["{not json"],
    }
    out = {"key": tmp_path / "keys/device.pub.jwk"}
    for name, lines in files.items():
        out[name] = tmp_path / f"{name}.jsonl"
        out[name].write_text("".join((x if isinstance(x, str) else encode(x).decode()) + "\n" for x in lines))
    return out


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("good", "every line passed"),
        ("forged", "a message was **rejected**"),
        ("gap", "a **gap** found"),
        ("malformed", "a line was **malformed**"),
    ],
)
def test_verify_exit_codes_are_the_documented_ones(
    signed: dict[str, Path], case: str, phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verify", "--pubkey", str(signed["key"]), str(signed[case])])
    capsys.readouterr()
    assert code == documented_code("verify", phrase)


def test_verify_with_an_unwritable_state_file_exits_with_the_documented_code(
    signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "missing/state.json"
    code = main(["verify", "--pubkey", str(signed["key"]), "--state", str(state), str(signed["good"])])
    capsys.readouterr()
    assert code == documented_code("verify", "`--state` file unreadable, invalid or not writable")


@pytest.fixture
def audit_log(tmp_path: Path, clock: FakeClock) -> Path:
    """A closed audit log (three segments) and its public key in tmp_path/key.jwk."""
    key = Ed25519PrivateKey.generate()
    settings = AuditConfig(checkpoint_every_entries=5, segment_max_entries=10)
    log = AuditLog.open(tmp_path / "audit", key, ORIGIN, clock, settings, retention_days=365)
    fill(log, clock, 6)
    log.close()
    (tmp_path / "key.jwk").write_text(json.dumps(public_jwk(key.public_key())))
    return tmp_path


def _tamper(audit: Path) -> None:
    seg = audit / "segment-000000000000.jsonl"
    seg.write_bytes(seg.read_bytes().replace(b'"people":6', b'"people":5', 1))


def _unreadable_segment(audit: Path) -> None:
    seg = audit / "segment-000000000010.jsonl"
    seg.unlink()
    seg.mkdir()  # unreadable even as root


@pytest.mark.parametrize("command", ["audit verify", "audit report"])
@pytest.mark.parametrize(
    ("case", "phrases"),
    [
        ("good", {"audit verify": "everything holds", "audit report": "log verified"}),
        ("tampered", {"audit verify": "**verification failed**", "audit report": "verification failed"}),
        ("unreadable", {"audit verify": "a segment", "audit report": "the log could not be read"}),
    ],
)
def test_audit_exit_codes_are_the_documented_ones(
    audit_log: Path, command: str, case: str, phrases: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    audit = audit_log / "audit"
    {"good": lambda _: None, "tampered": _tamper, "unreadable": _unreadable_segment}[case](audit)
    argv = [*command.split(), str(audit), "--pubkey", str(audit_log / "key.jwk")]
    if command == "audit report":
        argv += ["-o", str(audit_log / "report.html")]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == documented_code(command, phrases[command]), out
