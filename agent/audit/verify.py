"""The auditor's check of an exported audit directory, trusting only the device's public key.

It recomputes the RFC 9162 tree from the entries, verifies every checkpoint's signature and
that its root is the tree's root at its size (so successive checkpoints are consistent: they
describe one append-only sequence), compares any external checkpoints (copies kept off the
device, e.g. retained MQTT messages) to catch rollbacks and forks, and checks the invariants
inside the entries, and the log against ``state.json``, the head the device signed before its
last append (a cut-off tail has fewer entries than it attests). Files of the log that are not
regular files (a FIFO, a device) are refused before they are read: exit 2, never a hang.
Problems come out in log order, so the first one names the first bad entry.
A key rotation recorded in the log (agent/audit/rotation.py) is followed from the given key to
the other one when a checkpoint of the given key covers it, so one public key of the chain is
enough.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.cosignature import described, find_cosignature
from agent.audit.cosigned import COSIGNATURES_FILE
from agent.audit.entries import Entry, decode_entry, records_a_checkpoint
from agent.audit.invariants import Invariants
from agent.audit.log import DAY_MS
from agent.audit.merkle import CompactRange, leaf_hash, root_of
from agent.audit.note import SIG_PREFIX, NoteError, SignedCheckpoint, open_checkpoint, split_notes
from agent.audit.purge import seed_from
from agent.audit.rotation import find_rotations, follow_rotations
from agent.audit.statefile import Head, read_head
from agent.audit.store import (
    CHECKPOINTS_FILE,
    STATE_FILE,
    list_segments,
    read_regular,
    read_segment,
    segment_name,
)
from agent.crypto.keys import kid_for
from agent.errors import InputError, PayloadError


@dataclass(frozen=True)
class Located:
    """A checkpoint and where it came from (file and line), for messages."""

    cp: SignedCheckpoint
    where: str


@dataclass
class VerifyResult:
    """Everything ``audit verify`` prints and ``audit report`` shows."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    partial: str | None = None
    first_index: int = 0
    size: int = 0
    root: bytes = b""
    segments: int = 0
    origin: str | None = None
    checkpoints: list[Located] = field(default_factory=list)
    external: list[Located] = field(default_factory=list)
    verified_sizes: set[int] = field(default_factory=set)
    cosigned: list[tuple[str, str, int]] = field(default_factory=list)
    """(where, witness name, tree size) of external checkpoints a trusted witness cosigned."""
    followed: list[str] = field(default_factory=list)
    """Key rotations recorded in the log that linked another key to the given ones."""
    keys: list[Ed25519PublicKey] = field(default_factory=list)
    """The keys checkpoints were checked against: the given ones and those followed."""
    rejected: int = 0
    """Checkpoints whose note did not verify (a wrong --pubkey rejects them all)."""
    other_logs: dict[str, int] = field(default_factory=dict)
    """External checkpoints of other devices' logs (origin: count), skipped: a site's recording
    holds every device's."""
    stopped: bool = False
    """Reading stopped at an entry that broke the tree: entries after it were not read."""

    @property
    def ok(self) -> bool:
        return not self.problems


ExternalNotes = tuple[str, bytes] | tuple[str, bytes, int]
"""(source, notes) kept elsewhere; with a third item, the line of the source the notes are on
(one message of a recording, a JSON line): then every note is named by that line."""


def load_notes(
    data: bytes,
    source: str,
    public_key: Sequence[Ed25519PublicKey],
    result: VerifyResult,
    *,
    on_line: int | None = None,
    rejected: list[Rejected] | None = None,
) -> list[Located]:
    """Verify every note in a checkpoints file; a bad one is a problem, a cut-off tail a warning.
    ``on_line``: the notes are one line of ``source`` (one message of a recording, which no
    crash of the device cuts short). ``rejected``: a note that does not verify is put there
    instead, for the caller to judge once it knows the log's device (another device's note in
    a site's recording is not a forgery of this one's)."""
    notes, tail = split_notes(data)
    first_line = data[: len(data) - len(tail)].count(b"\n") + 1 if on_line is None else on_line
    if tail and (on_line is not None or not _cut_short(tail)):
        result.problems.append(
            f"{source} line {first_line}: a complete note that is not a valid checkpoint "
            "(a crash can only cut the last note of a file short)"
        )
    elif tail.strip():
        result.warnings.append(
            f"{source}: {len(tail)} bytes after the last checkpoint (cut short by a crash)"
        )
    out = []
    for line, note in notes:
        where = f"{source} line {line if on_line is None else on_line}"
        try:
            out.append(Located(open_checkpoint(note, public_key), where))
        except NoteError as exc:
            origin = note.split(b"\n", 1)[0].decode("utf-8", errors="replace")
            if rejected is not None:
                rejected.append(Rejected(where, origin, str(exc)))
            else:
                result.problems.append(f"{where}: checkpoint rejected: {exc}")
                result.rejected += 1
    return out


@dataclass(frozen=True)
class Rejected:
    """An external note that did not verify: where, the origin it names, and why."""

    where: str
    origin: str
    why: str


def _judge_rejected(rejected: list[Rejected], device_ids: set[str], result: VerifyResult) -> None:
    """A note naming another device's log (a site's recording holds every device's) is skipped,
    counted in a warning; one naming this device's log, or any when the log names no device,
    is a problem. Only notes that failed are judged so: one the device key signs is this
    device's whatever origin it names (the one-origin rule then decides)."""
    own = set(_origins(device_ids))
    others: dict[str, int] = {}
    for r in rejected:
        if own and r.origin not in own:
            others[r.origin] = others.get(r.origin, 0) + 1
            continue
        result.problems.append(f"{r.where}: checkpoint rejected: {r.why}")
        result.rejected += 1
    if others:
        result.other_logs = others
        named = ", ".join(f"{o} ({n})" for o, n in sorted(others.items())[:5])
        total = sum(others.values())
        result.warnings.append(f"{total} external checkpoint(s) of other logs skipped: {named}")


_NOTE_LINES = (r"[^\s+]+", r"0|[1-9][0-9]*", r"[A-Za-z0-9+/]{43}=", r"")


def _utf8_prefix(data: bytes) -> str | None:
    """Decode, allowing only the last character to be cut mid-way (an em dash is 3 bytes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":  # a wrong byte, not a cut
            return None
        return data[: exc.start].decode("utf-8", errors="replace")


MAX_ENTRY_BYTES = 1024 * 1024
"""Longer than any entry the log writes (the largest, a segment head naming the policy, is
bounded by the 256 KiB config)."""
ENTRY_START = b'{"data":'
"""How every entry line begins (RFC 8785 sorts its keys: data, i, kind, salt, ts)."""


def _not_an_entry_start(tail: bytes) -> str | None:
    """Why the bytes after a segment's last newline cannot be an entry a crash cut short (a crash
    leaves a prefix of the line being written, and a power loss may leave NUL bytes where the
    file system had allocated blocks it had not written yet), or None when they can be."""
    tail = tail.rstrip(b"\0")
    if tail[: len(ENTRY_START)] != ENTRY_START[: len(tail)]:
        return "does not start as an entry does"
    if len(tail) > MAX_ENTRY_BYTES:
        return f"longer than any entry, at most {MAX_ENTRY_BYTES} bytes"
    text = _utf8_prefix(tail)
    if text is None:
        return "not UTF-8"
    if any(ord(c) < 0x20 for c in text):
        return "holds a control character"
    return None


def _cut_short(tail: bytes) -> bool:
    """Could ``tail`` be the start of a valid checkpoint note that a crash cut off? A crash
    leaves a prefix of what was being written, never a wrong byte or a whole note."""
    text = _utf8_prefix(tail)
    if text is None or any(ord(c) < 0x20 and c != "\n" for c in text):
        return False
    *complete, partial = text.split("\n")
    if len(complete) > len(_NOTE_LINES) or not all(  # a whole signature line: not a cut
        re.fullmatch(p, line) for p, line in zip(_NOTE_LINES, complete, strict=False)
    ):
        return False
    if len(complete) < 3:
        return re.fullmatch(r"[A-Za-z0-9+/=_.:-]*|[^\s+]*", partial) is not None
    if len(complete) == 3:
        return partial == ""
    sig = SIG_PREFIX[: len(partial)]
    return partial.startswith(sig) and re.fullmatch(r"[^\s+]* ?[A-Za-z0-9+/=]{0,92}", partial[2:]) is not None


class _Verifier:
    def __init__(self, result: VerifyResult, max_lifetime_ms: int | None) -> None:
        self.r = result
        self.by_size: dict[int, list[Located]] = {}
        self.tree = CompactRange()
        self.seg_roots: dict[str, tuple[int, int, bytes]] = {}
        self.seg_last_ts: dict[str, int] = {}
        self.seg_first_ts: dict[str, int] = {}
        self.device_sizes = {loc.cp.size for loc in result.checkpoints}
        self.every = 0
        self.unsigned = 0
        self.invariants = Invariants(max_lifetime_ms)
        self.broken = False
        self.starts: list[int] = []
        self.signs_state = False

    def index_checkpoints(self) -> None:
        prev: Located | None = None
        for loc in self.r.checkpoints:
            if prev is not None and loc.cp.size < prev.cp.size:
                self.r.problems.append(
                    f"{loc.where}: checkpoint size {loc.cp.size} is smaller than the one before it "
                    f"({prev.cp.size}, {prev.where}): the checkpoint log is not append-only"
                )
            prev = loc
        for loc in [*self.r.checkpoints, *self.r.external]:
            same = self.by_size.setdefault(loc.cp.size, [])
            for other in same:
                if other.cp.root != loc.cp.root:
                    self.r.problems.append(
                        f"{loc.where}: fork: signs a different root at size {loc.cp.size} than {other.where}"
                    )
            same.append(loc)

    def check_root(self, size: int, root: bytes, where: str) -> None:
        for loc in self.by_size.get(size, []):
            if loc.cp.root != root:
                good = max((s for s in self.r.verified_sizes if s < size), default=None)
                first = self.r.first_index if good is None else good
                matched = "" if good is None else (
                    f" (entries {self.r.first_index}..{good - 1} match the checkpoint at size {good})"
                )
                self.r.problems.append(
                    f"{where}: the tree of entries {self.r.first_index}..{size - 1} hashes to "
                    f"{_b64(root)} but {loc.where} signed {loc.cp.root_b64} at size {size}: one of "
                    f"entries {first}..{size - 1} was changed, inserted, deleted or reordered{matched}"
                )
                self.broken = True
            else:
                self.r.verified_sizes.add(size)

    def run(self, segments: Sequence[tuple[int, Path]]) -> None:
        previous: str | None = None
        for n, (first, path) in enumerate(segments):
            try:
                seg = read_segment(path)
            except OSError as exc:
                raise unreadable(path, "audit segment", exc) from exc
            if not seg.lines and not seg.tail and n < len(segments) - 1:
                after, name = segments[n + 1][0], segments[n + 1][1].name
                self.r.problems.append(
                    f"{path.name}: empty (0 bytes) but {name} follows it: "
                    f"entries {first}..{after - 1} were removed"
                )
                self.broken = True
                return
            if seg.tail:
                if n == len(segments) - 1:
                    where = f"{path.name} line {len(seg.lines) + 1}"
                    why = _not_an_entry_start(seg.tail)
                    if why is not None:
                        self.r.problems.append(
                            f"{where}: after the last entry: {len(seg.tail)} bytes that no crash leaves "
                            f"({why})"
                        )
                    else:
                        self.r.partial = (
                            f"{where}: partial last entry ({len(seg.tail)} bytes, cut short by a crash) "
                            "ignored; everything before it was checked"
                        )
                else:
                    line = len(seg.lines) + 1
                    self.r.problems.append(f"{path.name} line {line}: partial line inside the log")
                    self.broken = True
                    return
            if not self.segment(first, path.name, previous, seg.lines):
                return
            previous = path.name

    def segment(self, first: int, name: str, previous: str | None, lines: list[bytes]) -> bool:
        if not lines:  # a rotation cut short before its first line (run refuses it elsewhere)
            return True
        leaves: list[bytes] = []
        for n, line in enumerate(lines, start=1):
            where = f"{name} line {n} (entry {self.tree.size if n > 1 or first == 0 else first})"
            try:
                entry = decode_entry(line)
                if n == 1:
                    self.open_segment(entry, first, name, previous, where)
                    self.seg_first_ts[name] = entry.ts_ms
                else:
                    self.check_index(entry)
            except PayloadError as exc:
                self.r.problems.append(f"{where}: {exc}")
                self.broken = True
                return False
            leaf = leaf_hash(line)
            leaves.append(leaf)
            self.tree.append(leaf)
            self.r.problems.extend(f"{where}: {p}" for p in self.invariants.check(entry))
            self.count_unsigned(entry, where)
            if self.tree.size in self.by_size:
                self.check_root(self.tree.size, self.tree.root(), where)
            if self.broken:
                return False
        self.seg_roots[name] = (first, len(lines), root_of(leaves))
        self.seg_last_ts[name] = self.invariants.last_ts
        return True

    def count_unsigned(self, entry: Entry, where: str) -> None:
        """The log signs at least every N entries (N from its segment entries); the publish
        records of checkpoints, written by the callback, do not count towards N."""
        if entry.kind == "segment":
            self.every = max(self.every, entry.data["checkpoint_every"])
        if self.tree.size in self.device_sizes:
            self.unsigned = 0
            return
        if records_a_checkpoint(entry.kind, entry.data):
            return
        self.unsigned += 1
        if self.unsigned == self.every + 1:
            self.r.problems.append(
                f"{where}: {self.unsigned} entries since the last checkpoint in {CHECKPOINTS_FILE}, "
                f"but the log signs one at least every {self.every}: a checkpoint was deleted"
            )

    def check_index(self, entry: Entry) -> None:
        if entry.index != self.tree.size:
            raise PayloadError(
                f"holds entry index {entry.index}, expected {self.tree.size}: "
                "an entry was deleted, inserted or reordered"
            )

    def open_segment(self, entry: Entry, first: int, name: str, previous: str | None, where: str) -> None:
        if entry.index != first:
            raise PayloadError(f"first entry has index {entry.index} but the file name says {first}")
        self.starts.append(first)
        self.signs_state = "queued" in entry.data  # written by a version that signs state.json
        seed = seed_from(entry)
        if previous is None:
            self.tree = seed
            self.r.first_index = first
            if first > 0:
                self.check_root(first, seed.root(), where)
            self.invariants.starts_at(first, entry.data)
            return
        if entry.data["policy"] != self.invariants.policy:
            raise PayloadError("its recorded policy differs from the policy in force before it")
        if entry.data["start"] != self.invariants.last_start:
            raise PayloadError("its recorded start (software, models, config) differs from the last one")
        queued = entry.data.get("queued")
        if queued is not None and queued != self.invariants.queued:
            raise PayloadError(
                f"its recorded queue ({queued} frame(s) waiting) differs from the last frames entry's "
                f"({self.invariants.queued})"
            )
        if entry.data["previous"] != previous:
            raise PayloadError(f"names {entry.data['previous']!r} as the previous segment, not {previous!r}")
        if seed.hashes != self.tree.hashes:
            raise PayloadError("its recorded right edge differs from the tree of the entries before it")


def _read_optional(path: Path, what: str) -> bytes | None:
    """A file of the log, None when it is absent; a FIFO, a device or a folder under its name
    is refused before it is read (exit 2), so verify never blocks on it."""
    try:
        return read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise unreadable(path, what, exc) from exc


def unreadable(path: Path, what: str, exc: OSError) -> InputError:
    """A file of the log that cannot be read: the log could not be checked (exit 2), which is
    not the same as checked and found bad (exit 1)."""
    return InputError(f"{path}: cannot read the {what}: {exc.strerror or exc}")


def verify_log(
    directory: str | Path,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    external: Iterable[ExternalNotes] = (),
    max_lifetime_ms: int | None = None,
    witnesses: Sequence[tuple[str, Ed25519PublicKey]] = (),
) -> VerifyResult:
    """Check an audit directory against the device key(s); ``external`` are (source name,
    notes bytes) kept elsewhere."""
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    root_dir = Path(directory)
    result = VerifyResult(root_dir)
    if not root_dir.is_dir():
        what = "not a folder" if root_dir.exists() else "no such folder"
        raise PayloadError(f"{root_dir}: {what} (give the audit folder, e.g. state_dir/audit)")
    cp_path = root_dir / CHECKPOINTS_FILE
    cp_data = _read_optional(cp_path, "checkpoints file")
    data = cp_data or b""
    state = _read_optional(root_dir / STATE_FILE, "state file")
    cosigned = _read_optional(root_dir / COSIGNATURES_FILE, "cosignatures file")
    if cosigned is not None:  # what a witness sent back (agent/audit/cosigned.py)
        external = [*external, (COSIGNATURES_FILE, cosigned)]
    external = list(external)
    try:
        segments = list_segments(root_dir)
    except OSError as exc:
        raise unreadable(root_dir, "audit folder", exc) from exc
    rotations, bad_rotations = find_rotations(segments)
    result.problems += bad_rotations
    notes = [note for _, note in split_notes(data)[0]]
    notes += [note for item in external for _, note in split_notes(item[1])[0]]
    keys, result.followed = follow_rotations(keys, notes, rotations)
    result.keys = keys
    if cp_data is not None:
        result.checkpoints = load_notes(data, CHECKPOINTS_FILE, keys, result)
    rejected: list[Rejected] = []
    for item in external:
        on_line = item[2] if len(item) == 3 else None
        result.external += load_notes(item[1], item[0], keys, result, on_line=on_line, rejected=rejected)
    forged = {name for loc in result.external for name in _cosignatures(loc, witnesses, result)}
    _silent_witnesses([(n, k) for n, k in witnesses if n not in forged], result)
    result.segments = len(segments)
    if not segments:
        raise PayloadError(f"{root_dir}: no audit segments (segment-*.jsonl) found")
    v = _Verifier(result, max_lifetime_ms)
    v.index_checkpoints()
    v.run(segments)
    _judge_rejected(rejected, v.invariants.device_ids, result)
    result.size, result.root = v.tree.size, v.tree.root()
    _after(result, v)
    if cp_data is None:
        result.problems.append(
            f"{CHECKPOINTS_FILE} is missing: the log creates it (empty) with its first segment, "
            "so its absence means it was deleted"
        )
    _origin(result, v)
    _state(result, v, state)
    return result


def _after(result: VerifyResult, v: _Verifier) -> None:
    """Checks that need the whole log: rollbacks, coverage by checkpoints, purges."""
    origin = next((loc.cp.origin for loc in result.checkpoints), None)
    result.origin = origin
    result.problems.extend(v.invariants.finish(v.seg_roots))
    if v.invariants.clock_steps_back:
        result.warnings.append(
            f"the device clock went backwards {v.invariants.clock_steps_back} time(s) between entries"
        )
    if v.invariants.unclean:
        starts = ", ".join(
            f"entry {i} ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ts // 1000))} UTC)"
            for i, ts in v.invariants.unclean[:5]
        )
        more = f" and {len(v.invariants.unclean) - 5} more" if len(v.invariants.unclean) > 5 else ""
        result.warnings.append(
            f"{len(v.invariants.unclean)} run(s) ended with no stop entry (killed, crashed or power "
            f"lost), each found at the next start: {starts}{more}; the frames such a run captured "
            "after its last frames entry, and the window it had open, are in no entry"
        )
    complete = not v.broken
    result.stopped = v.broken
    old = []
    for loc in [*result.checkpoints, *result.external]:
        size = loc.cp.size
        if size > result.size and complete:
            result.problems.append(
                f"{loc.where}: signed a tree of {size} entries but the log holds {result.size}: "
                f"entries {result.size}..{size - 1} were removed (rolled back or truncated)"
            )
        elif size < result.first_index:
            old.append(size)
    if old:
        result.warnings.append(
            f"{len(old)} checkpoint(s) (sizes {min(old)}..{max(old)}) predate the retained entries "
            "(purged): their signatures were checked, their roots cannot be"
        )
    covered = max(result.verified_sizes, default=0)
    if complete and result.first_index > 0 and not any(
        d["first_kept"] == result.first_index and index < covered for index, d in v.invariants.purges
    ):
        result.problems.append(
            f"entries 0..{result.first_index - 1} are missing and no purge entry covered by a "
            "signed checkpoint records their removal"
        )
    _overdue(result, v)
    _legacy(result, v)
    on_device = {loc.cp.size for loc in result.checkpoints}
    for start in v.starts:
        if complete and start > 0 and start not in on_device:
            result.problems.append(
                f"{segment_name(start)}: the log signs a checkpoint whenever a segment starts, but "
                f"{CHECKPOINTS_FILE} has none at size {start}: a checkpoint was deleted"
            )
            break
    signed = max((loc.cp.size for loc in result.checkpoints), default=0)
    if complete and signed < result.size and result.rejected:  # not the device's doing: the key's?
        result.warnings.append(
            f"entries {signed}..{result.size - 1} are covered by no checkpoint that verified: "
            f"{result.rejected} checkpoint(s) were rejected (see below)"
        )
    elif complete and signed < result.size:
        result.warnings.append(
            f"entries {signed}..{result.size - 1} are not yet covered by a signed checkpoint "
            "(the device is running or was stopped without a clean shutdown)"
        )


def _origins(device_ids: Iterable[str]) -> list[str]:
    """The checkpoint origins a device may sign: ``emotion-agent/<device_id>`` (what the agent
    signs), and ``emotion-agent/<device_id>/audit``, which docs/audit-log.md used to give (and
    pass to ``AuditLog.open`` in its example): logs opened that way still verify."""
    return [o for d in sorted(device_ids) for o in (f"emotion-agent/{d}", f"emotion-agent/{d}/audit")]


def _origin(result: VerifyResult, v: _Verifier) -> None:
    """One log, one origin: every checkpoint names it, and it is the device's, as the
    ``start`` entries (or the first kept segment's copy of the last one) name the device."""
    located = [*result.checkpoints, *result.external]
    if not located:
        return
    first = located[0]
    other = next((loc for loc in located if loc.cp.origin != first.cp.origin), None)
    if other is not None:
        result.problems.append(
            f"{other.where}: checkpoint origin {other.cp.origin!r} differs from {first.cp.origin!r} "
            f"({first.where}): a log has one origin"
        )
    ids = v.invariants.device_ids
    if len(ids) > 1:
        result.problems.append(
            f"the start entries name {len(ids)} devices ({', '.join(sorted(ids))}): a log has one"
        )
    elif ids and first.cp.origin not in _origins(ids):
        result.problems.append(
            f"{first.where}: checkpoint origin {first.cp.origin!r} is not the device's: the start "
            f"entries name device {next(iter(ids))!r}, whose checkpoints are signed as "
            f"{_origins(ids)[0]!r}"
        )


def _state(result: VerifyResult, v: _Verifier, data: bytes | None) -> None:
    """``state.json`` against the log: the device attests the head before every append, so the
    log holds exactly the attested entries, or one fewer (a crash fell between the two)."""
    if v.broken:
        return  # the log already fails; its size says nothing
    state = _signed_state(result, data, v.signs_state)
    if state is None:
        return
    key = next((k for k in result.keys if kid_for(k) == state.get("kid")), None)
    if key is None:
        result.problems.append(
            f"{STATE_FILE}: no signature by the trusted key(s): it names key {str(state.get('kid'))[:80]!r}, "
            "neither a --pubkey key nor one a key rotation recorded in the log links to"
        )
        return
    origins = [loc.cp.origin for loc in [*result.checkpoints, *result.external]][:1]
    origins = origins or _origins(v.invariants.device_ids)
    if not origins:
        result.warnings.append(
            f"{STATE_FILE}: its signature could not be checked: no checkpoint or start entry names "
            "the log's origin"
        )
        return
    error = ""
    for origin in origins:
        try:
            head = read_head(origin, state, key)
        except ValueError as exc:
            error = str(exc)
            continue
        if head is not None:
            _compare_head(result, head)
            return
    result.problems.append(f"{STATE_FILE}: {error}")


def _signed_state(result: VerifyResult, data: bytes | None, signs: bool) -> dict[str, Any] | None:
    """The parsed ``state.json`` if it carries a signature; otherwise a problem or a warning."""
    if data is None:
        result.problems.append(
            f"{STATE_FILE} is missing: the log writes it before its first entry and replaces it "
            "before every other one, so its absence means it was deleted (and with it the proof "
            "that the log's tail was not cut off)"
        )
        return None
    try:
        state = json.loads(data)
    except (ValueError, RecursionError) as exc:
        result.problems.append(f"{STATE_FILE}: not JSON ({str(exc)[:100]}): the device writes it atomically")
        return None
    if not isinstance(state, dict):
        result.problems.append(f"{STATE_FILE}: not a JSON object: the device writes one atomically")
        return None
    if "sig" not in state and signs:
        result.problems.append(
            f"{STATE_FILE} is unsigned, but the last segment was written by a version that signs "
            "it (its segment entry records `queued`): the signature was removed"
        )
        return None
    if "sig" not in state:
        result.warnings.append(
            f"{STATE_FILE} is unsigned (written by a version before states were signed): it "
            "cannot show that no entries were cut off the end of the log"
        )
        return None
    return state


def _compare_head(result: VerifyResult, head: Head) -> None:
    size = result.size
    if head.size > size + 1:
        result.problems.append(
            f"{STATE_FILE}: the device attested {head.size} entries but the log holds {size}: "
            f"entries {size}..{head.size - 1} were removed (the log was truncated)"
        )
    elif head.size == size + 1:
        if result.partial is None:
            result.warnings.append(
                f"{STATE_FILE} attests {head.size} entries, one more than the log holds: the device "
                f"stopped (a crash, a full disk) between attesting entry {size} and writing it"
            )
    elif head.size < size:
        result.problems.append(
            f"entries {head.size}..{size - 1} were not written by this agent ({STATE_FILE}, signed "
            f"by the device, attests {head.size}): an entry was appended"
        )
    elif head.root != result.root:
        result.problems.append(
            f"{STATE_FILE}: the root of the {size} entries is not the one the device attested: an "
            "entry was altered"
        )


def _overdue(result: VerifyResult, v: _Verifier) -> None:
    """Segments kept past the retention in force fail: the schedule the device announced (and
    an auditor relies on) was not kept. A segment may be purged once its last entry is older
    than ``audit_days`` and it is no longer the one being written (the next segment started);
    a day of slack covers the retention timer's period."""
    policy = v.invariants.policy
    if policy is None or v.broken:
        return
    names = list(v.seg_last_ts)
    now = v.invariants.last_ts
    late = [
        name for name, following in itertools.pairwise(names)
        if now > max(v.seg_last_ts[name] + policy["audit_days"] * DAY_MS, v.seg_first_ts[following]) + DAY_MS
    ]
    if late:
        result.problems.append(
            f"{late[0]}: purge overdue: {len(late)} segment(s) kept more than a day after "
            f"retention.audit_days ({policy['audit_days']}) allowed their purge, at the last entry"
        )


def _legacy(result: VerifyResult, v: _Verifier) -> None:
    n = v.invariants.legacy_frames
    if n:
        result.warnings.append(
            f"{n} frames entr{'y' if n == 1 else 'ies'} in the old form (pixel_bytes_persisted, a "
            "constant the device did not measure; discarded computed as a remainder): they show "
            "the frame counts, not that no image reached state_dir"
        )


Witnesses = Sequence[tuple[str, Ed25519PublicKey]]


def _cosignatures(loc: Located, witnesses: Witnesses, result: VerifyResult) -> list[str]:
    """Record which trusted witnesses cosigned an external checkpoint (C2SP tlog-cosignature).

    A cosignature line that does not verify is a warning, not a failure: the checkpoint is the
    device's (its own signature was checked), and anyone who can publish to the cosignature
    topic can append a line to ``cosignatures.log``; it is simply not counted as cosigned.
    Returns the witnesses such a line was found for (already warned about)."""
    forged = []
    for name, key in witnesses:
        try:
            found = find_cosignature(loc.cp.note, name, key)
        except NoteError as exc:
            result.warnings.append(f"{loc.where}: {exc}: not counted as cosigned")
            forged.append(name)
            continue
        if found is not None:
            result.cosigned.append((loc.where, name, loc.cp.size))
    return forged


def _silent_witnesses(witnesses: Witnesses, result: VerifyResult) -> None:
    """A ``--witness`` that cosigned nothing (and has no forged line, warned about already) is
    said: a mistyped key and a log no witness has seen yet look alike, and an OK without a
    ``cosigned:`` line was easy to misread."""
    seen = {name for _, name, _ in result.cosigned}
    for name, key in witnesses:
        if name not in seen:
            result.warnings.append(
                f"--witness {described(name, key)} cosigned none of the "
                f"{len(result.external)} external checkpoint(s): a key that is not the witness's, or "
                "a log it has not seen"
            )


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def summary_lines(result: VerifyResult) -> list[str]:
    """What ``audit verify`` prints, first problem first."""
    out = [
        f"audit log: {result.directory}",
        f"entries: {result.first_index}..{result.size - 1} in {result.segments} segment(s); "
        f"root {_b64(result.root)}"
        + ("; reading stopped there, at the first entry that broke the tree" if result.stopped else ""),
        f"checkpoints: {len(result.checkpoints)} on the device, {len(result.external)} external; "
        f"{len(result.verified_sizes)} tree size(s) matched a signed root",
    ]
    if result.cosigned:
        names = sorted({name for _, name, _ in result.cosigned})
        sizes = {size for _, _, size in result.cosigned}
        out.append(
            f"cosigned: {len(sizes)} tree size(s) by {', '.join(names)}, up to tree size {max(sizes)} "
            f"({len(result.cosigned)} cosigned cop{'y' if len(result.cosigned) == 1 else 'ies'})"
        )
    out += [f"key: {line}" for line in result.followed]
    if result.partial:
        out.append(f"note: {result.partial}")
    out += [f"warning: {w}" for w in result.warnings]
    if result.problems:
        out.append(f"FAIL: {result.problems[0]}")
        out += [f"  also: {p}" for p in result.problems[1:20]]
        if len(result.problems) > 20:
            out.append(f"  ... and {len(result.problems) - 20} more")
    else:
        out.append("OK: every entry, checkpoint and invariant verified")
    return out

