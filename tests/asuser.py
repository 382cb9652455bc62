"""Running a test step as another user, for checks of file permissions while tests run as root."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

NOBODY = 65534
_PR_SET_DUMPABLE = 4


@contextmanager
def as_nobody() -> Iterator[None]:
    """As root, drop the effective uid to nobody meanwhile (as anyone else, do nothing).

    The kernel marks a process that changes its credentials not dumpable; the flag is restored
    afterwards, since other tests (agent.privacy.coredump) read it from this same process."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
