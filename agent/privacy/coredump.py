"""Keep the process's memory, which holds frames, out of core files.

A crash (SIGSEGV in a native library, or the watchdog's SIGABRT on a stalled loop) makes the
kernel write the process's memory to a core file when the core size limit allows it, and
systemd gives services ``RLIMIT_CORE=infinity`` unless the unit says otherwise: that core holds
whatever frame was being analysed. ``forbid_core_dumps`` (called by ``run`` and ``analyze``
once the config is read, before any camera or model) sets the limit to 0 (soft and hard, so
nothing in the process can raise it again) and marks the process not dumpable with
``prctl(PR_SET_DUMPABLE, 0)``, which also refuses ptrace attaches by other processes of the same
user. The unit repeats it (``LimitCORE=0``), so either one is enough for ``run``.

Linux only (the agent's platform); elsewhere it reports what it could not do and changes nothing.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
"""From <linux/prctl.h>."""


@dataclass(frozen=True, slots=True)
class CoreDumpState:
    """What the kernel will do with this process's memory if it crashes."""

    dumpable: int | None
    """prctl(PR_GET_DUMPABLE): 0 = no core, no ptrace by others; None where unsupported."""
    core_soft: int
    core_hard: int

    @property
    def safe(self) -> bool:
        """No core file can be written: not dumpable, or a core size limit of 0."""
        return self.dumpable == 0 or self.core_soft == 0


def _prctl() -> ctypes._FuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    # dlopen(NULL): the C library the process already runs on. ctypes.util.find_library would
    # run ldconfig in a child process and import subprocess and tempfile for good (0.24 MB).
    libc = ctypes.CDLL(None, use_errno=True)
    fn: ctypes._FuncPointer = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def core_dump_state() -> CoreDumpState:
    """The current state, read back from the kernel (not what we asked for)."""
    prctl = _prctl()
    dumpable = int(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) if prctl is not None else None
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    return CoreDumpState(dumpable, soft, hard)


def forbid_core_dumps(announce: bool = True) -> CoreDumpState:
    """RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0; returns the state read back afterwards.
    ``announce``: log the success (``run``'s log says it; ``analyze`` prints only a failure).

    A failure is logged, not raised: the unit's ``LimitCORE=0`` still holds, and the returned
    state says what is in force. The limit is lowered only when it is not 0 already (a unit with
    ``LimitCORE=0`` and ``SystemCallFilter=~@resources`` needs no call)."""
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (OSError, ValueError) as exc:
            logger.warning("cannot set the core file size limit to 0: %s", exc)
    prctl = _prctl()
    if prctl is not None and prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
    state = core_dump_state()
    fields = {"dumpable": state.dumpable, "core_limit": state.core_soft}
    if state.safe and announce:
        logger.info("core dumps off: a crash cannot write frames to disk", extra={"fields": fields})
    elif not state.safe:
        logger.warning("core dumps are still possible: a crash may write frames to disk",
                       extra={"fields": fields})
    return state
