"""Memory figures shared by both ``bench`` modes: peak and anonymous resident set size."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def anon_rss_mb() -> float:
    """``RssAnon`` of /proc/self/status (Linux); 0 where there is none."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024.0
    return 0.0
