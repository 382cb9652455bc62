"""tools/fleet_bench.py with tiny numbers: the table has a row per source and stored == published."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fleet_bench.py"


@pytest.mark.slow
def test_bench_table_counts_every_published_message_stored() -> None:
    out = subprocess.run(
        [sys.executable, str(TOOL), "--devices", "20", "--windows", "2", "--speedup", "600",
         "--source", "mqtt", "nats", "--timeout", "120"],
        capture_output=True, text=True, timeout=400, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith(("| mqtt", "| nats"))]
    assert [r[0].strip() for r in rows] == ["mqtt", "nats"]
    for r in rows:
        published, stored = int(r[4]), int(r[5])
        assert published == 20 * 3  # two windows and one checkpoint per device
        assert stored == published
        assert len(r[6].split(",")) >= 1


def test_bench_rejects_bad_input_with_one_line() -> None:
    out = subprocess.run([sys.executable, str(TOOL), "--devices", "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "fleet_bench: --devices 0: must be between 1 and 100000"
