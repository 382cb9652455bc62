"""tools/bench_people_count.py: the figures docs/analytics.md quotes come from real counts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_tool_counts_every_scene_it_names() -> None:
    out = subprocess.run(
        [sys.executable, "tools/bench_people_count.py", "--dense", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert len(rows) == 7, out
    assert re.search(r"tracks\s+60 .* count\s+20\s", rows["60 tracks in 20 triples"]), out
    for name, line in rows.items():
        if name.startswith("crowd"):  # a crowd counts at least one person, at most its size
            people = int(name.split()[1].rstrip(","))
            count = int(re.findall(r"count\s+(\d+)", line)[0])
            assert 1 <= count <= people, line
            assert "window close" in line, line
