"""Memory figures shared by both ``bench`` modes: peak and anonymous resident set size."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def status_mb(field: str) -> float:
    """A kB field of /proc/self/status (Linux) in MB; 0 where there is none."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def anon_rss_mb() -> float:
    """``RssAnon``: heap, arrays, the models' arenas, the decoder's buffers."""
    return status_mb("RssAnon")


def file_rss_mb() -> float:
    """``RssFile``: library code and data, and model files, mapped from files."""
    return status_mb("RssFile")
