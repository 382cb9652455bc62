"""``verify``: check a stream of signed messages (JSON lines) the way a receiver should.

Exit 0 only if every line passes or is unsigned by design (availability ``status``, an empty
payload clearing a retained message, commands to the device: counted as skipped); 1 if a message
is rejected (signature, key, topic, time, replay, order) or a sequence gap is found; 2 if a line
is malformed or the key or the ``--state`` file cannot be used (read, or written back: a missing
folder is refused up front). Ctrl-C while reading ends the input: what was read is summarised,
kept in ``--state`` and decides the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agent.atomic import write_atomic
from agent.commands.arg_types import topic_filter
from agent.config import is_valid_device_id
from agent.crypto import load_public_key, parse_strict
from agent.crypto.verify import MAX_LINE_BYTES, Result, Verifier, verify_stream
from agent.errors import EXIT_INPUT, EXIT_OK, EXIT_RUNTIME, InputError, PayloadError
from agent.user_files import read_user_bytes


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="verify signed messages (JSON lines) and report forgeries, replays and gaps",
        description="Read JSON lines (bare envelopes, or {\"topic\": T, \"payload\": P} as received, "
        "e.g. from `mosquitto_sub -F %j -t 'emotion-agent/#'`) from FILEs or stdin; print one line per "
        "failure or gap. Unsigned-by-design messages (status online/offline, empty retained clears, "
        "commands) are skipped and counted. Exit 0 if all pass, 1 if any message is rejected or a "
        "gap is found, 2 for malformed input or an unusable key. Format: docs/signed-messages.md.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="JSON-lines files (default: stdin)")
    p.add_argument(
        "--pubkey", action="append", required=True, metavar="FILE",
        help="trusted public key: JWK, PEM or raw base64 (repeat for several)",
    )
    p.add_argument("--topic", type=topic_filter, help="topic or MQTT filter every message must be signed for")
    p.add_argument("--device", type=_device_id, help="device id every message must carry")
    p.add_argument(
        "--max-skew", type=int, default=300, metavar="S",
        help="largest number of seconds ts may be ahead of the arrival time (default 300)",
    )
    p.add_argument(
        "--max-age", type=int, default=None, metavar="S",
        help="largest number of seconds ts may be behind the arrival time (default: unlimited)",
    )
    p.add_argument(
        "--state", metavar="FILE",
        help="remember accepted (boot, seq) and rotated keys in FILE across runs (created if missing)",
    )
    p.add_argument("--allow-gaps", action="store_true", help="report sequence gaps but exit 0 for them")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=verify)


def _lines(files: list[str], starts: list[tuple[int, str]], cut: list[str]) -> Iterator[bytes]:
    """Every line of the files in turn (stdin if none); ``starts`` gets, as each file is opened,
    the number of lines before it and its name; ``cut`` the names of inputs left unread after an
    endless line."""
    if not files:
        yield from _bounded(sys.stdin.buffer, "stdin", cut)
        return
    before = 0
    for name in files:
        starts.append((before, name))
        try:
            with Path(name).open("rb") as handle:
                for line in _bounded(handle, name, cut):
                    before += 1
                    yield line
        except OSError as exc:
            raise InputError(f"{name}: cannot read: {exc.strerror}") from exc


MAX_RECORDED_LINE = 2 << 30
"""More than any MQTT message (at most 268,435,455 bytes) recorded by ``mosquitto_sub -F %j``,
which escapes a byte in at most 6: past it the input is not a recording (/dev/zero spun)."""


def _bounded(handle: IO[bytes], name: str, cut: list[str]) -> Iterator[bytes]:
    """The lines of ``handle``, each cut to ``MAX_LINE_BYTES`` + 1 bytes (the rest of a longer
    line is read and dropped in pieces, so the verifier refuses it without the whole line ever
    being in memory: a 1 GB payload recorded with ``mosquitto_sub -F %j`` took 1 GB). A line
    longer than ``MAX_RECORDED_LINE`` ends the input (its name goes to ``cut``)."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            dropped = 0
            while (rest := handle.readline(1 << 16)) and not rest.endswith(b"\n"):
                dropped += len(rest)
                if dropped > MAX_RECORDED_LINE:
                    cut.append(name)
                    yield line
                    return
        yield line


def _where(number: int, starts: list[tuple[int, str]], several: bool) -> str:
    """``line N``; with several files ``FILE: line N``, N counted in that file."""
    if not several:
        return f"line {number}"
    before, name = next((b, n) for b, n in reversed(starts) if b < number)
    return f"{name}: line {number - before}"


def _until_interrupted(lines: Iterator[bytes], interrupted: list[int]) -> Iterator[bytes]:
    """The lines until they end or Ctrl-C stops the reading (then ``interrupted`` gets the count).

    ``mosquitto_sub ... | emotion-agent verify`` is ended with Ctrl-C, which reaches every process
    of the pipeline; what was read still counts: it is summarised and kept in ``--state``."""
    count = 0
    try:
        for line in lines:
            count += 1
            yield line
    except KeyboardInterrupt:
        interrupted.append(count)


MAX_STATE_BYTES = 64 * 1024 * 1024
"""About half a million streams (device, key): a FIFO or /dev/zero given as the state is
refused before it is read (one hung, the other read until memory ran out)."""


def _device_id(text: str) -> str:
    if not is_valid_device_id(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device id: 1-63 lower-case letters, digits and '-', starting and "
            "ending with a letter or digit (as device_id in the agent's config)"
        )
    return text


def _load_state(verifier: Verifier, path: Path) -> None:
    if not os.path.lexists(path):
        if not path.parent.is_dir():  # say so now, not after reading every message
            raise InputError(f"{path}: cannot write the verifier state: folder {path.parent} does not exist")
        return
    text = read_user_bytes(path, "verifier state", InputError, max_bytes=MAX_STATE_BYTES)
    try:
        data = parse_strict(text)
    except PayloadError as exc:
        raise PayloadError(f"{path}: verifier state is not valid: {exc}") from exc
    verifier.import_state(data, str(path))


def _context(result: Result) -> str:
    env = result.envelope
    if not env or not all(k in env for k in ("dev", "boot", "seq")):
        return ""
    return f" [dev {env['dev']} boot {env['boot']} seq {env['seq']}]"


def _report(where: str, result: Result, out: IO[str]) -> None:
    if not result.ok and result.status != "skipped":  # skipped lines are counted in the summary
        out.write(f"{where}: {result.status}{_context(result)}: {result.reason}\n")
    for gap in result.gaps:
        span = f"seq {gap.first}" if gap.missing == 1 else f"seq {gap.first}..{gap.last}"
        out.write(
            f"{where}: gap [dev {gap.dev} boot {gap.boot}]: {span} missing "
            f"({gap.missing} message(s)) before seq {gap.last + 1}\n"
        )
    for note in result.notes:
        out.write(f"{where}: note: {note}\n")


def _summary(counts: dict[str, int], gaps: int, missing: int, skipped: dict[str, int], retained: int) -> None:
    also = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    sys.stderr.write(
        f"verify: {sum(counts.values())} message(s): {counts['ok']} ok, {counts['rejected']} "
        f"rejected, {counts['malformed']} malformed{also}; {gaps} gap(s), {missing} missing\n"
    )
    for reason, n in sorted(skipped.items()):
        sys.stderr.write(f"verify: skipped {n}: {reason}\n")
    if retained:
        sys.stderr.write(
            f"verify: {retained} retained copy(ies) verified but not ordered (the broker replays "
            "them at subscription in topic order)\n"
        )


def _save_state(verifier: Verifier, path: str) -> None:
    text = json.dumps(verifier.export_state(), indent=1) + "\n"
    try:
        write_atomic(Path(path), text.encode("utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot write the verifier state: {exc.strerror or exc}") from exc


def verify(args: argparse.Namespace) -> int:
    for name, value in (("--max-skew", args.max_skew), ("--max-age", args.max_age)):
        if value is not None and value < 0:
            raise InputError(f"{name} {value}: must be zero or more seconds")
    keys = [load_public_key(path) for path in args.pubkey]
    verifier = Verifier(
        keys, expected_topic=args.topic, device=args.device,
        max_skew_s=args.max_skew, max_age_s=args.max_age,
    )
    if args.state:
        _load_state(verifier, Path(args.state))
    counts = {"ok": 0, "rejected": 0, "malformed": 0, "skipped": 0}
    gaps = missing = unbound = retained = 0
    skipped: dict[str, int] = {}
    interrupted: list[int] = []
    starts: list[tuple[int, str]] = []
    cut: list[str] = []
    lines = _until_interrupted(_lines(args.files, starts, cut), interrupted)
    for number, result in verify_stream(lines, verifier):
        counts[result.status] += 1
        unbound += result.ok and not result.topic_checked
        retained += result.ok and result.retained
        if result.status == "skipped":
            skipped[result.reason] = skipped.get(result.reason, 0) + 1
        gaps += len(result.gaps)
        missing += sum(g.missing for g in result.gaps)
        _report(_where(number, starts, len(args.files) > 1), result, sys.stdout)
    if args.state:
        _save_state(verifier, args.state)
    for name in cut:
        sys.stderr.write(
            f"verify: {name}: a line longer than {MAX_RECORDED_LINE >> 30} GiB without a line end: "
            "not a recording of MQTT messages, the rest of it is not read\n"
        )
    if interrupted:
        where = _where(interrupted[0], starts, len(args.files) > 1) if interrupted[0] else "line 0"
        sys.stderr.write(f"verify: interrupted after {where}; the lines read are checked\n")
    if not args.quiet:
        _summary(counts, gaps, missing, skipped, retained)
        if unbound:
            sys.stderr.write(
                f"verify: warning: topic binding not checked for {unbound} message(s): give --topic "
                "or lines of the form {\"topic\": T, \"payload\": P}\n"
            )
    if counts["malformed"] or cut:
        return EXIT_INPUT
    if counts["rejected"] or (gaps and not args.allow_gaps):
        return EXIT_RUNTIME
    return EXIT_OK
