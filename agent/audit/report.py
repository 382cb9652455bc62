"""The auditor's HTML report: one self-contained page, inline SVG plots, no script, no network.

It shows the verification result first, then who signed (device, key), what ran (software,
model and config hashes), under which rules (policy timeline, privacy-mode and config changes),
what happened to frames (per hour, lifetime distribution), what was published or suppressed,
and what retention removed. Everything comes from the entries; nothing is inferred.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.entries import Entry, decode_entry
from agent.audit.note import key_id, raw_public_key, verifier_key
from agent.audit.store import iter_lines, list_segments
from agent.audit.verify import VerifyResult, summary_lines, unreadable
from agent.crypto import kid_for
from agent.errors import PayloadError

HOUR_MS = 3_600_000
LIFETIME_BINS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
MAX_EMPTY_HOURS = 7 * 24
"""A longer run of hours without entries is plotted as one bar that says how long it is."""


@dataclass
class Stats:
    """What the report plots, gathered from the readable entries."""

    starts: list[Entry] = field(default_factory=list)
    policy: list[Entry] = field(default_factory=list)
    changes: list[Entry] = field(default_factory=list)
    purges: list[Entry] = field(default_factory=list)
    incidents: list[Entry] = field(default_factory=list)
    captured: Counter[int] = field(default_factory=Counter)
    analysed: Counter[int] = field(default_factory=Counter)
    dropped: Counter[int] = field(default_factory=Counter)
    published: Counter[int] = field(default_factory=Counter)
    suppressed: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    lifetimes: Counter[str] = field(default_factory=Counter)
    publishes: int = 0
    image_files: int = 0
    """Sum over windows of files in state_dir that looked like images (measured entries)."""
    scans: int = 0
    unmeasured: int = 0
    """frames entries in the old form, whose pixel figure was a constant."""


def _bin(ms: int) -> str:
    for edge in LIFETIME_BINS:
        if ms <= edge:
            return f"≤{edge}"
    return f">{LIFETIME_BINS[-1]}"


def collect(directory: Path) -> Stats:
    s = Stats()
    try:
        segments = list_segments(directory)
    except OSError as exc:
        raise unreadable(directory, "audit folder", exc) from exc
    for n, (_, path) in enumerate(segments):
        try:
            _collect_segment(s, path, first=n == 0)
        except OSError as exc:  # changed since it was verified
            raise unreadable(path, "audit segment", exc) from exc
    return s


def _collect_segment(s: Stats, path: Path, first: bool) -> None:
    for line in iter_lines(path):
        try:
            e = decode_entry(line)
        except PayloadError:
            continue  # verify reports it; the report shows what can be read
        if first and e.kind == "segment" and e.index > 0:
            _carried_over(s, e)
        _add(s, e)


def _carried_over(s: Stats, e: Entry) -> None:
    """After a purge, the first kept segment says what ran and which policy was in force."""
    if e.data["start"] is not None:
        s.starts.append(Entry(e.index, e.ts_ms, "start", e.data["start"], e.line))
    if e.data["policy"] is not None:
        data = {"policy": e.data["policy"], "reason": "in force at the first kept entry"}
        s.policy.append(Entry(e.index, e.ts_ms, "policy_change", data, e.line))


def _add(s: Stats, e: Entry) -> None:
    d, hour = e.data, e.ts_ms // HOUR_MS
    if e.kind == "start":
        s.starts.append(e)
        s.policy.append(e)
    elif e.kind == "policy_change":
        s.policy.append(e)
    elif e.kind in ("config_change", "privacy_mode"):
        s.changes.append(e)
    elif e.kind == "purge":
        s.purges.append(e)
    elif e.kind in ("error", "key_event", "stop"):
        s.incidents.append(e)
    elif e.kind == "frames":
        s.captured[hour] += d["captured"]
        s.analysed[hour] += d["analysed"]
        s.dropped[hour] += d["dropped"] + d["discarded"]
        s.lifetimes[_bin(d["lifetime_max_ms"])] += 1
        if "state_image_files" in d:
            s.scans += 1
            s.image_files += d["state_image_files"]
        else:
            s.unmeasured += 1
    elif e.kind == "window":
        (s.published if d["published"] else s.suppressed)[hour] += 1
        if not d["published"]:
            s.reasons[d["suppressed"] or "unspecified"] += 1
    elif e.kind == "publish":
        s.publishes += 1


def _t(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError):  # beyond year 9999: only a tampered entry gets there
        return f"ts {ms} (beyond year 9999)"


def _esc(v: object) -> str:
    return html.escape(str(v))


def bar_chart(labels: list[str], series: list[tuple[str, str, list[int]]], title: str) -> str:
    """Stacked vertical bars as inline SVG; series are (name, colour, values)."""
    w, h, pad = 720, 220, 40
    totals = [sum(vals[i] for _, _, vals in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    bw = (w - 2 * pad) / max(len(labels), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" role="img" '
        f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>',
        f'<line x1="{pad}" y1="{h}" x2="{w - pad}" y2="{h}" stroke="#333"/>',
        f'<text x="{pad - 4}" y="{pad - 8}" font-size="11" text-anchor="end">{top}</text>',
    ]
    for i, label in enumerate(labels):
        y = float(h)
        for name, colour, vals in series:
            bar = (h - pad) * vals[i] / top
            y -= bar
            parts.append(
                f'<rect x="{pad + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" '
                f'height="{bar:.1f}" fill="{colour}">'
                f"<title>{_esc(label)} {_esc(name)}: {vals[i]}</title></rect>"
            )
        if i % max(len(labels) // 8, 1) == 0:
            parts.append(
                f'<text x="{pad + (i + 0.5) * bw:.1f}" y="{h + 14}" font-size="10" '
                f'text-anchor="middle">{_esc(label)}</text>'
            )
    legend = " ".join(
        f'<tspan fill="{colour}">■</tspan> {_esc(name)}' for name, colour, _ in series
    )
    parts.append(f'<text x="{pad}" y="{h + 34}" font-size="11">{legend}</text></svg>')
    return "".join(parts)


def _table(head: list[str], rows: list[list[object]]) -> str:
    if not rows:
        return "<p><em>none recorded</em></p>"
    th = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _hour_label(hour: int) -> str:
    text = _t(hour * HOUR_MS)
    return text[5:13] + "h" if text[:1].isdigit() else text


def _hours(*counters: Counter[int]) -> list[tuple[str, int | None]]:
    """The plots' bars: (label, hour), every hour from the first to the last with entries, except
    that a run of more than MAX_EMPTY_HOURS hours without any is one bar (hour None).

    A Pi has no real-time clock, so entries written before NTP answered carry 1970 times: one
    bar per hour from there was 470,000 bars (a 200 MB page), and a tampered ts of 2**53 - 1
    exhausted the memory."""
    bars: list[tuple[str, int | None]] = []
    previous: int | None = None
    for hour in sorted(set().union(*counters)):
        if previous is not None:
            empty = hour - previous - 1
            if empty > MAX_EMPTY_HOURS:
                bars.append((f"{empty} h without entries", None))
            else:
                bars += [(_hour_label(h), h) for h in range(previous + 1, hour)]
        bars.append((_hour_label(hour), hour))
        previous = hour
    return bars


def _per_hour(counter: Counter[int], hours: list[tuple[str, int | None]]) -> list[int]:
    return [0 if hour is None else counter[hour] for _, hour in hours]


def _key_section(result: VerifyResult, keys: Sequence[Ed25519PublicKey], s: Stats) -> str:
    devices = sorted({e.data["device_id"] for e in s.starts})
    kids = sorted({e.data["kid"] for e in s.incidents if e.kind == "key_event"})
    rows: list[list[object]] = [
        ["device id(s)", ", ".join(devices) or "no start entry retained"],
        ["log origin / key name", result.origin or "no checkpoint"],
        ["key ids in key events", ", ".join(kids) or "none recorded"],
    ]
    for n, key in enumerate(keys, start=1):
        rows.append([f"trusted key {n}: public key (base64)", base64.b64encode(raw_public_key(key)).decode()])
        rows.append([f"trusted key {n}: JWK thumbprint (kid, RFC 7638)", kid_for(key)])
        if result.origin:
            rows.append([f"trusted key {n}: signed-note key ID", key_id(result.origin, key).hex()])
            rows.append([f"trusted key {n}: note verifier key", verifier_key(result.origin, key)])
    return _table(["", ""], rows)


def _policy_rows(s: Stats) -> list[list[object]]:
    rows: list[list[object]] = []
    for e in s.policy:
        p: dict[str, Any] = e.data["policy"]
        why = "start" if e.kind == "start" else e.data["reason"]
        rows.append([
            _t(e.ts_ms), e.index, why, p["min_people"], p["window_seconds"], p["audit_days"],
            p["max_frame_lifetime_ms"], f"{p['jurisdiction']}/{p['context']}/{p['purpose']}",
            "off" if p["dp_epsilon_milli"] is None else p["dp_epsilon_milli"],
        ])
    return rows


def _details(entries: list[Entry]) -> list[list[object]]:
    return [
        [_t(e.ts_ms), e.index, e.kind, ", ".join(f"{k}={v}" for k, v in sorted(e.data.items()))]
        for e in entries
    ]


def _setup_sections(s: Stats) -> list[str]:
    """What ran and under which rules."""
    software = [
        [_t(e.ts_ms), e.index, e.data["boot"], e.data["software_version"], e.data["config_hash"],
         "; ".join(f"{k}={v}" for k, v in sorted(e.data["model_hashes"].items()))]
        for e in s.starts
    ]
    return [
        "<h2>Software, models and configuration</h2>",
        _table(["time (UTC)", "entry", "boot", "software", "config sha256", "models (sha256)"], software),
        "<h2>Policy timeline</h2>",
        _table(["time (UTC)", "entry", "why", "k", "window s", "audit days", "max lifetime ms",
                "site", "DP ε×1000"], _policy_rows(s)),
        "<h3>Configuration and privacy-mode changes</h3>",
        _table(["time (UTC)", "entry", "kind", "detail"], _details(s.changes)),
    ]


def _activity_sections(s: Stats) -> list[str]:
    """What happened to frames and windows, with plots."""
    hours = _hours(s.captured, s.published, s.suppressed)
    labels = [label for label, _ in hours]
    frames_svg = bar_chart(labels, [
        ("analysed", "#2b6cb0", _per_hour(s.analysed, hours)),
        ("dropped or discarded", "#d69e2e", _per_hour(s.dropped, hours)),
    ], "Frames per hour")
    windows_svg = bar_chart(labels, [
        ("published", "#2f855a", _per_hour(s.published, hours)),
        ("suppressed", "#c53030", _per_hour(s.suppressed, hours)),
    ], "Windows per hour")
    bins = [f"≤{b}" for b in LIFETIME_BINS] + [f">{LIFETIME_BINS[-1]}"]
    life_svg = bar_chart(bins, [("windows", "#6b46c1", [s.lifetimes[b] for b in bins])],
                         "Longest frame lifetime per window (ms)")
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s.reasons.items())) or "none"
    return [
        "<h2>Frames processed per hour</h2>", frames_svg,
        f"<p>Total captured {sum(s.captured.values())}, analysed {sum(s.analysed.values())}; "
        f"scans of state_dir at window close: {s.scans}, files that looked like an image or a video: "
        f"<strong>{s.image_files}</strong>"
        + (f"; {s.unmeasured} window(s) in the old form, not scanned" if s.unmeasured else "")
        + ".</p>",
        "<h2>Frame lifetime distribution</h2>", life_svg,
        "<h2>Windows published vs suppressed</h2>", windows_svg,
        f"<p>{sum(s.published.values())} published, {sum(s.suppressed.values())} suppressed "
        f"({reasons}); {s.publishes} messages published.</p>",
    ]


def _retention_sections(s: Stats) -> list[str]:
    purges = [
        [_t(e.ts_ms), e.index, ", ".join(g["name"] for g in e.data["segments"]),
         sum(g["count"] for g in e.data["segments"]), e.data["first_kept"], e.data["retention_days"]]
        for e in s.purges
    ]
    return [
        "<h2>Retention purges</h2>",
        _table(["time (UTC)", "entry", "segments removed", "entries removed", "kept from",
                "retention days"], purges),
        "<h2>Stops, errors and key events</h2>",
        _table(["time (UTC)", "entry", "kind", "detail"], _details(s.incidents)),
    ]


def render_report(result: VerifyResult, keys: Ed25519PublicKey | Sequence[Ed25519PublicKey]) -> str:
    """The whole page; the verification result comes first, in words an auditor can quote."""
    s = collect(result.directory)
    status = "VERIFIED" if result.ok else "VERIFICATION FAILED"
    colour = "#176f2c" if result.ok else "#a11"
    body = [
        f'<h1>Audit report <span style="color:{colour}">{status}</span></h1>',
        "<pre>" + _esc("\n".join(summary_lines(result))) + "</pre>",
        "<h2>Device and key</h2>",
        _key_section(result, [keys] if isinstance(keys, Ed25519PublicKey) else keys, s),
        *_setup_sections(s),
        *_activity_sections(s),
        *_retention_sections(s),
    ]
    return _PAGE.format(body="\n".join(body), generated=_esc(str(result.directory)))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>emotion-agent audit report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top;
  word-break: break-all; }}
pre {{ background: #f6f6f6; padding: .8em; white-space: pre-wrap; font-size: 12px; }}
</style></head><body>
{body}
<p style="color:#777;font-size:12px">Generated from {generated} by emotion-agent audit report.</p>
</body></html>
"""

