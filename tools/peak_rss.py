"""Peak RSS of a command, split into anonymous and file-backed memory, and what each MB is.

    .venv/bin/python tools/peak_rss.py [--interval S] [--runs N] [--smaps FILE] -- COMMAND ...

Starts COMMAND, reads ``/proc/PID/smaps_rollup`` every ``--interval`` seconds (default 5 ms)
until it exits, and prints the highest RSS with its anonymous and file-backed parts at that
instant. Whenever RSS reaches a new high it also reads ``/proc/PID/smaps``; the last such copy
(the peak's) is summarised by mapping: the heap, the other anonymous mappings by size, and
file-backed pages by file. The kernel merges adjacent anonymous mappings, so a mapping is not
one allocation: which allocation is what comes from ``heaptrack`` (docs/vision.md, "Memory").
``--smaps`` keeps that copy. A sample taken every few milliseconds can miss a peak shorter than
that; ``ru_maxrss`` of the child (printed beside) cannot.
Linux only; the command's exit status is reported, not checked.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

MB = 1024.0 * 1024.0


@dataclass
class Mapping:
    """One mapping of ``/proc/PID/smaps``: its range, file (or [heap], [stack], '') and pages."""

    start: int
    end: int
    name: str
    rss_kb: int = 0
    anon_kb: int = 0


@dataclass
class Peak:
    rss_kb: int = 0
    anon_kb: int = 0
    file_kb: int = 0
    at_s: float = 0.0
    smaps: str = ""
    samples: int = 0
    maxrss_kb: int = 0
    status: int = 0


def rollup(text: str) -> tuple[int, int, int]:
    """(Rss, Anonymous, Rss - Anonymous) in kB from smaps_rollup text."""
    values = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE))
    rss, anon = int(values.get("Rss", 0)), int(values.get("Anonymous", 0))
    return rss, anon, rss - anon


def parse_smaps(text: str) -> list[Mapping]:
    maps: list[Mapping] = []
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:
            fields = rest.split(maxsplit=4)
            lo, hi = (int(x, 16) for x in head.split("-"))
            maps.append(Mapping(lo, hi, fields[4].strip() if len(fields) > 4 else ""))
        elif maps and head == "Rss:":
            maps[-1].rss_kb = int(rest.split()[0])
        elif maps and head == "Anonymous:":
            maps[-1].anon_kb = int(rest.split()[0])
    return maps


def anon_label(m: Mapping) -> str:
    """Anonymous mappings grouped: the heap, the stack, libraries' private pages, others by size."""
    if m.name in ("[heap]", "[stack]"):
        return m.name
    if m.name.startswith("/"):
        return "libraries' private pages (relocated data, .bss)"
    if m.end - m.start >= 1024 * 1024:
        return "other anonymous mappings >= 1 MB (arenas, decoder pools, thread heaps)"
    return "other anonymous mappings < 1 MB"


def breakdown(text: str) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Anonymous kB (and mapping count) by kind, file-backed kB by file."""
    anon: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    files: dict[str, int] = defaultdict(int)
    for m in parse_smaps(text):
        if m.anon_kb:
            row = anon[anon_label(m)]
            row[0] += m.anon_kb
            row[1] += 1
        file_kb = m.rss_kb - m.anon_kb
        if file_kb and m.name.startswith("/"):
            files[Path(m.name).name] += file_kb
        elif file_kb:
            files[m.name or "(anonymous shared)"] += file_kb
    return {k: (v[0], v[1]) for k, v in anon.items()}, dict(files)


def measure(command: list[str], interval: float) -> Peak:
    peak = Peak()
    started = time.monotonic()
    proc = subprocess.Popen(command)
    rollup_path, smaps_path = f"/proc/{proc.pid}/smaps_rollup", f"/proc/{proc.pid}/smaps"
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            rss, anon, file_kb = rollup(Path(rollup_path).read_text())
            peak.samples += 1
            if rss > peak.rss_kb:
                smaps = Path(smaps_path).read_text()
                peak = Peak(rss, anon, file_kb, time.monotonic() - started, smaps, peak.samples)
        except (OSError, ValueError):  # exiting between wait4 and the read
            pass
        time.sleep(interval)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak.status, peak.maxrss_kb = proc.returncode, usage.ru_maxrss
    return peak


def report(peak: Peak, top: int) -> str:
    lines = [
        f"peak RSS {peak.rss_kb / 1024:.1f} MB at {peak.at_s:.1f} s: anonymous {peak.anon_kb / 1024:.1f} MB,"
        f" file-backed {peak.file_kb / 1024:.1f} MB (ru_maxrss {peak.maxrss_kb / 1024:.1f} MB;"
        f" {peak.samples} samples; exit {peak.status})",
    ]
    anon, files = breakdown(peak.smaps)
    lines.append("anonymous at the peak (smaps, read right after the peak sample):")
    for label, (kb, count) in sorted(anon.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"  {kb / 1024:7.1f} MB  {label} ({count} mapping{'s' if count != 1 else ''})")
    lines.append("file-backed at the peak, by file:")
    ranked = sorted(files.items(), key=lambda kv: -kv[1])
    for name, kb in ranked[:top]:
        lines.append(f"  {kb / 1024:7.1f} MB  {name}")
    rest = sum(kb for _, kb in ranked[top:])
    if rest:
        lines.append(f"  {rest / 1024:7.1f} MB  {len(ranked) - top} other files")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=0.005, help="seconds between samples (default 0.005)")
    p.add_argument("--runs", type=int, default=1, help="run the command this many times")
    p.add_argument("--top", type=int, default=12, help="files listed by name (default 12)")
    p.add_argument("--smaps", type=Path, help="write the peak's /proc/PID/smaps here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (put it after --)")
    if not Path("/proc/self/smaps_rollup").exists():
        print("peak_rss: needs Linux /proc/PID/smaps_rollup", file=sys.stderr)
        return 2
    for run in range(args.runs):
        peak = measure(command, args.interval)
        print(f"--- run {run + 1}/{args.runs}: {' '.join(command)}", file=sys.stderr)
        print(report(peak, args.top), file=sys.stderr)
        if args.smaps is not None:
            args.smaps.write_text(peak.smaps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
