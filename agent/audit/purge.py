"""Retention for the audit log: which whole segments may go, and the record that says so.

A segment may be purged when its last entry is older than the cutoff; only a contiguous run of
the oldest segments, never the one being written. The record names each segment, its entry
range, last timestamp and the Merkle root of its own entries, and the root of the tree at the
first kept entry (recomputed from that segment's ``segment`` entry), so the rest still verifies.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from agent.audit.entries import Entry, decode_entry
from agent.audit.merkle import CompactRange, leaf_hash, root_of
from agent.audit.store import list_segments, read_segment
from agent.errors import PayloadError


def seed_from(entry: Entry) -> CompactRange:
    """The tree before a segment, from its first (``segment``) entry."""
    if entry.kind != "segment":
        raise PayloadError(f"entry {entry.index} should open its segment but is a {entry.kind!r} entry")
    hashes = [base64.b64decode(h) for h in entry.data["edge"]]
    try:
        return CompactRange(entry.index, hashes)
    except ValueError as exc:
        raise PayloadError(f"segment entry {entry.index}: {exc}") from exc


def summarise(first: int, path: Path) -> dict[str, Any]:
    """A purged segment as the purge entry records it."""
    lines = read_segment(path).lines
    return {
        "name": path.name,
        "first": first,
        "count": len(lines),
        "last_ts_ms": decode_entry(lines[-1]).ts_ms,
        "root": _b64(root_of([leaf_hash(line) for line in lines])),
    }


def plan_purge(
    directory: Path, current_first: int, cutoff_ms: int, retention_days: int
) -> tuple[dict[str, Any], list[Path]] | None:
    """The purge entry's data and the files to delete, or None when nothing is due."""
    gone: list[dict[str, Any]] = []
    paths: list[Path] = []
    kept_first = current_first
    for first, path in list_segments(directory):
        if first >= current_first:
            break
        summary = summarise(first, path)
        if summary["last_ts_ms"] >= cutoff_ms:
            kept_first = first
            break
        gone.append(summary)
        paths.append(path)
    if not gone:
        return None
    kept_path = next(p for f, p in list_segments(directory) if f == kept_first)
    seed = seed_from(decode_entry(read_segment(kept_path).lines[0]))
    data = {
        "segments": gone,
        "first_kept": kept_first,
        "root_at_first_kept": _b64(seed.root()),
        "retention_days": retention_days,
        "cutoff_ms": max(cutoff_ms, 0),
    }
    return data, paths


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")
