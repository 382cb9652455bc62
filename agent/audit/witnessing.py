"""What the device adds to each published checkpoint so a witness can check it (docs/fleet.md).

The ``audit/checkpoint`` body carries the note and, from the second published checkpoint on,
an RFC 9162 consistency proof from the previously published size (``proof_from``). The edge
of that previous tree is kept in ``checkpoint-edge.json`` beside the audit folder; the leaves
since are read back from the segments, which are never purged that soon. A witness that
cosigned the previous checkpoint can then cosign this one or catch a rewrite.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from agent.atomic import write_atomic
from agent.audit.merkle import CompactRange, leaf_hash
from agent.audit.note import NoteError, parse_checkpoint_text
from agent.audit.proofs import consistency_from_edge, extended
from agent.audit.store import STATE_FILE, list_segments, read_segment
from agent.crypto import JSON

logger = logging.getLogger(__name__)

EDGE_FILE = "checkpoint-edge.json"


def read_leaves(audit_dir: Path, lo: int, hi: int) -> list[bytes] | None:
    """Leaf hashes of entries ``lo..hi-1`` from the segments, or None if some are gone."""
    out: list[bytes] = []
    segments = list_segments(audit_dir)
    for n, (first, path) in enumerate(segments):
        after = segments[n + 1][0] if n + 1 < len(segments) else None
        if first >= hi or (after is not None and after <= lo):
            continue  # wholly outside lo..hi: not read (a year of segments stays on disk)
        lines = read_segment(path).lines
        if first > lo + len(out):
            return None  # a purged or missing segment
        start = lo + len(out) - first
        out += [leaf_hash(line) for line in lines[start : hi - first]]
    return out if len(out) == hi - lo else None


class CheckpointProver:
    """Turns a checkpoint note into the published body, with a proof when one can be made."""

    def __init__(self, audit_dir: Path, edge_file: Path) -> None:
        self.audit_dir = audit_dir
        self.edge_file = edge_file

    def _load(self) -> CompactRange | None:
        try:
            data = json.loads(self.edge_file.read_text(encoding="utf-8"))
            return CompactRange(int(data["size"]), [base64.b64decode(h) for h in data["edge"]])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            logger.warning("checkpoint edge file unreadable: the next checkpoint goes without a proof")
            return None

    def _save(self, edge: CompactRange) -> None:
        data = {"size": edge.size, "edge": [base64.b64encode(h).decode("ascii") for h in edge.hashes]}
        write_atomic(self.edge_file, json.dumps(data, sort_keys=True).encode("utf-8") + b"\n")

    def _seed_from_state(self, size: int, root: bytes) -> None:
        """Old segments purged before any edge was kept: start from the log's own state file."""
        try:
            data = json.loads((self.audit_dir / STATE_FILE).read_text(encoding="utf-8"))
            edge = CompactRange(int(data["size"]), [base64.b64decode(h) for h in data["edge"]])
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return
        if edge.size == size and edge.root() == root:
            self._save(edge)

    def body_for(self, note: bytes) -> dict[str, JSON]:
        body: dict[str, JSON] = {"note": note.decode("utf-8")}
        try:
            _, size, root = parse_checkpoint_text(note.decode("utf-8").split("\n\n", 1)[0] + "\n")
        except (NoteError, UnicodeDecodeError):
            return body
        base = self._load()
        start = base.size if base is not None and base.size <= size else 0
        leaves = read_leaves(self.audit_dir, start, size)
        if leaves is None:
            self._seed_from_state(size, root)
            return body
        old = base if base is not None and start else CompactRange()
        edge = extended(old, leaves)
        if edge.root() != root:
            logger.warning("checkpoint does not match the audit segments: published without a proof")
            return body
        if 0 < old.size < size:
            body["proof_from"] = old.size
            body["proof"] = [base64.b64encode(h).decode("ascii") for h in consistency_from_edge(old, leaves)]
        self._save(edge)
        return body
