"""``bench --matrix [SOURCE]``: full and short range, float and int8, each in a child process of
its own (``python -m agent bench --json``, so each peak RSS is its own), one after the other,
and one table: pipeline fps beside this clip's raw invoke limit, and their ratio.

A detector without an int8 variant (short range: docs/quantization.md) gets a row saying so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from agent.errors import RuntimeFailure

VARIANTS = (
    ("full_range", "float"), ("full_range", "int8"), ("short_range", "float"), ("short_range", "int8"),
)
COLUMNS = (
    ("detector", "{detector}"), ("precision", "{precision}"), ("frames", "{frames}{whole}"),
    ("faces/frame", "{faces_per_frame}"), ("detect ms", "{detect_invoke_ms:.3f}"),
    ("emotion ms", "{emotion_invoke_ms:.3f}"), ("invoke limit fps", "{invoke_limit_fps:.1f}"),
    ("pipeline fps", "{pipeline_clip_fps:.1f}"), ("ratio", "{limit_ratio:.3f}"),
    ("ratio CPU", "{limit_cpu_ratio:.3f}"), ("1st pass ratio", "{cold_ratio}"), ("glue ms", "{glue_ms:.3f}"),
    ("source scaling ms", "{source_scaling_ms:.3f}"),
    ("peak RSS MB", "{peak_rss_mb:.1f}"), ("anon MB", "{anon_rss_mb:.1f}"),
    ("file MB", "{file_rss_mb:.1f}"),
)


def child_command(args: argparse.Namespace, detector: str, precision: str) -> list[str]:
    cmd = [sys.executable, "-m", "agent", "--log-level", "WARNING", "bench", "--json"]
    cmd += ["--detector", detector, "--precision", precision]
    if args.source:
        cmd.append(args.source)
    for flag, value in (("--config", args.config), ("--threads", args.threads), ("--frames", args.frames)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_variant(cmd: list[str]) -> dict[str, Any] | str:
    """The child's JSON result, or why it did not run (a model without an int8 variant)."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - our own CLI
    if done.returncode == 0:
        result: dict[str, Any] = json.loads(done.stdout)
        return result
    why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    if done.returncode == 2 and "has no int8 variant" in why:
        return "no int8 variant in the manifest"
    raise RuntimeFailure(f"bench variant `{' '.join(cmd[3:])}` failed: {why}")


def render_table(rows: list[tuple[str, str, dict[str, Any] | str]]) -> str:
    cells = [[name for name, _ in COLUMNS]]
    notes = [""]
    for detector, precision, r in rows:
        if isinstance(r, str):
            cells.append([detector, precision] + ["-"] * (len(COLUMNS) - 2))
            notes.append(f"  ({r})")
        else:
            first = r.get("first_pass")
            values = {
                **r, "whole": " (whole)" if r["whole_clip"] else "",
                "cold_ratio": "-" if not first else f"{first['limit_ratio']:.3f}",
            }
            cells.append([fmt.format(**values) for _, fmt in COLUMNS])
            notes.append("")
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + note
        for row, note in zip(cells, notes, strict=True)
    )


def run(args: argparse.Namespace) -> int:
    rows = [(d, p, run_variant(child_command(args, d, p))) for d, p in VARIANTS]
    if args.json:
        json.dump([r if isinstance(r, dict) else {"detector": d, "precision": p, "skipped": r}
                   for d, p, r in rows], sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_table(rows))
    return 0
