"""``audit verify`` and ``audit report``: the auditor's tools, trusting only the public key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.cosignature import described, parse_vkey, repeated
from agent.audit.report import render_report
from agent.audit.store import read_regular
from agent.audit.verify import ExternalNotes, summary_lines, verify_log
from agent.commands.arg_types import positive_int
from agent.crypto import load_public_key
from agent.errors import EXIT_OK, EXIT_REJECTED, InputError, PayloadError


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify the audit log or render an auditor's report")
    cmds = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    cmds.required = True
    v = cmds.add_parser(
        "verify",
        help="check entries, tree, checkpoint signatures, consistency and invariants",
        description="Exit 0 if everything holds; 1 if verification failed (the first bad entry is named); "
        "2 if the folder, a key or the checkpoints file cannot be used.",
    )
    _common(v)
    v.add_argument(
        "--max-lifetime-ms",
        type=positive_int,
        metavar="N",
        help="frame lifetime bound to enforce (default: the policy recorded in the log)",
    )
    v.set_defaults(func=verify_cmd)
    r = cmds.add_parser("report", help="write a self-contained HTML report (inline SVG, no network)")
    _common(r)
    r.add_argument("-o", "--output", required=True, type=Path, help="HTML file to write")
    r.add_argument("--max-lifetime-ms", type=positive_int, metavar="N", help="as for verify")
    r.set_defaults(func=report_cmd)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", type=Path, metavar="DIR", help="the audit folder (state_dir/audit)")
    p.add_argument(
        "--pubkey",
        required=True,
        type=Path,
        action="append",
        metavar="FILE",
        help="device public key (JWK, PEM, base64); repeat for a log that spans a key rotation",
    )
    p.add_argument(
        "--checkpoints",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="checkpoints kept off the device (notes, or JSON lines of MQTT messages); repeatable",
    )
    p.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a trusted witness as its verifier key NAME+KEYID+BASE64 (from `emotion-agent collect`'s "
        "docs/fleet.md); external checkpoints it cosigned are counted; repeatable",
    )


_MAX_NESTING = 8
"""How deep ``_find_note`` looks: a stored MQTT message is ``payload`` (an object or a string of
JSON) > ``body`` > ``note``; anything deeper is not one."""


NOTE_TOPICS = ("/audit/checkpoint", "/audit/cosignature")
"""The topics whose messages carry checkpoint notes; a recording's other lines are skipped."""


def read_external(path: Path) -> list[ExternalNotes]:
    """Checkpoint notes from a file: plain notes, or JSON lines carrying them under ``note``
    (a recording, ``mosquitto_sub -F %j``: lines of other topics are skipped), each named by
    its line in the file.

    The file is the auditor's, but its content may come from anywhere (a broker's history):
    whatever it holds is refused as a PayloadError naming the file and line (exit 2), never a
    traceback."""
    try:
        data = read_regular(path)  # a FIFO or a device is refused before it is read
    except OSError as exc:
        raise InputError(f"{path}: cannot read the checkpoints file: {exc.strerror or exc}") from exc
    if not data.lstrip().startswith(b"{"):
        return [(str(path), data)]
    notes: list[ExternalNotes] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            topic = message.get("topic") if isinstance(message, dict) else None
            if isinstance(topic, str) and not topic.endswith(NOTE_TOPICS):
                continue  # stats, health, ... of the same recording
            note = _find_note(message)
        except RecursionError:
            raise PayloadError(f"{path} line {n}: JSON nested too deeply to be a stored message") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"{path} line {n}: not JSON: {exc}") from exc
        if note is None:
            raise PayloadError(f"{path} line {n}: no 'note' string in this JSON object")
        try:
            notes.append((str(path), note.encode("utf-8"), n))
        except UnicodeEncodeError as exc:
            raise PayloadError(
                f"{path} line {n}: the note is not text (character {exc.start}: a lone surrogate "
                "\\ud800-\\udfff, which UTF-8 cannot hold)"
            ) from None
    if not notes:
        raise PayloadError(f"{path}: no line carries a checkpoint (topics ending {', '.join(NOTE_TOPICS)})")
    return notes


def _find_note(obj: Any, depth: int = 0) -> str | None:
    """The note in a signed envelope (``body.note``), a stored message (``payload``, an object
    or, as ``mosquitto_sub -F %j`` writes it, a string of JSON) or a bare ``{"note": ...}``;
    at most ``_MAX_NESTING`` levels down."""
    if not isinstance(obj, dict) or depth > _MAX_NESTING:
        return None
    if isinstance(obj.get("note"), str):
        return str(obj["note"])
    for inner in ("body", "payload"):
        value = obj.get(inner)
        if isinstance(value, str) and "\n\n— " in value:
            return value  # a plain note (a witness's cosigned checkpoint) as mosquitto_sub wrote it
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                continue
        found = _find_note(value, depth + 1)
        if found is not None:
            return found
    return None


def parse_witness(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """``name+hexkeyid+base64(0x04||key)``: InputError naming what is wrong."""
    try:
        return parse_vkey(vkey)
    except ValueError as exc:
        raise InputError(f"--witness {vkey!r}: {exc}") from exc


def parse_witnesses(vkeys: list[str]) -> list[tuple[str, Ed25519PublicKey]]:
    """Every ``--witness``, each once: a repeat is a slip (another witness's key meant?)."""
    witnesses = [parse_witness(v) for v in vkeys]
    twice = repeated(witnesses)
    if twice is not None:
        named = described(*witnesses[twice[0]])
        raise InputError(f"--witness {named} is given twice: give each witness once")
    return witnesses


def verify_cmd(args: argparse.Namespace) -> int:
    keys = [load_public_key(p) for p in args.pubkey]
    external = [notes for p in args.checkpoints for notes in read_external(p)]
    witnesses = parse_witnesses(args.witness)
    result = verify_log(args.directory, keys, external, args.max_lifetime_ms, witnesses)
    for line in summary_lines(result):
        print(line)
    return EXIT_OK if result.ok else EXIT_REJECTED


def report_cmd(args: argparse.Namespace) -> int:
    keys = [load_public_key(p) for p in args.pubkey]
    external = [notes for p in args.checkpoints for notes in read_external(p)]
    witnesses = parse_witnesses(args.witness)
    result = verify_log(args.directory, keys, external, args.max_lifetime_ms, witnesses)
    html = render_report(result, keys)
    try:
        args.output.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{args.output}: cannot write the report: {exc}") from exc
    state = "verified" if result.ok else "VERIFICATION FAILED"
    print(f"{args.output}: report written ({state})", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_REJECTED
