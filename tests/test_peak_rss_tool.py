"""tools/peak_rss.py: the peak of a real child process, split into anonymous and file-backed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parents[1] / "tools" / "peak_rss.py"

SMAPS = """\
55d000000000-55d000400000 rw-p 00000000 00:00 0                          [heap]
Rss:                4096 kB
Anonymous:          4096 kB
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Rss:                2048 kB
Anonymous:          2000 kB
7f0000400000-7f0000500000 r-xp 00000000 08:01 42                         /usr/lib/libfoo.so.1
Rss:                 512 kB
Anonymous:             0 kB
7f0000500000-7f0000510000 rw-p 00100000 08:01 42                         /usr/lib/libfoo.so.1
Rss:                  64 kB
Anonymous:            16 kB
"""


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peak_rss", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peak_rss", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_breakdown_splits_anonymous_by_kind_and_file_pages_by_file() -> None:
    anon, files = load_tool().breakdown(SMAPS)
    assert anon == {
        "[heap]": (4096, 1),
        "other anonymous mappings >= 1 MB (arenas, decoder pools, thread heaps)": (2000, 1),
        "libraries' private pages (relocated data, .bss)": (16, 1),
    }
    assert files == {"(anonymous shared)": 48, "libfoo.so.1": 512 + 48}


def test_a_child_that_holds_40_mb_peaks_above_it_in_anonymous_memory() -> None:
    tool = load_tool()
    code = "import time; b = bytearray(40 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3)"
    peak = tool.measure([sys.executable, "-c", code], 0.005)
    assert peak.status == 0
    assert peak.anon_kb >= 40 * 1024
    assert peak.rss_kb == peak.anon_kb + peak.file_kb
    assert peak.maxrss_kb >= 40 * 1024  # the kernel's own peak, from wait4
    assert "Rss:" in peak.smaps
