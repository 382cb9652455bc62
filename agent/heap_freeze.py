"""Leave the objects of start-up out of the garbage collector's passes (``gc.freeze``).

Start-up (imports, the config, the opened models; in ``run`` the audit log and MQTT as well)
leaves tens of thousands of long-lived objects tracked by Python's cyclic garbage collector,
and each of its passes over the older generations walks them all again. On the bench VM, with
the 47,000 objects of ``bench``, a generation-1 pass took 7-12 ms and a full one 32 ms, each in
the middle of some frame whose pixels stayed alive meanwhile (in ``bench`` over the demo clip,
one pass in 100 frames: 0.12 ms of glue per frame). Collected once and frozen when start-up
ends, those objects are never walked again; what the loop allocates afterwards is collected as
before.

Once per process: an object frozen and later dropped in a reference cycle is never freed, so
freezing again (after a reload, say) would keep whatever cycles start-up's leftovers form.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)

_frozen = False


def freeze_startup_heap() -> int:
    """Collect the garbage there is, then freeze every object still tracked; how many were
    frozen (0 when this process froze its start-up already)."""
    global _frozen  # noqa: PLW0603 - once per process
    if _frozen:
        return 0
    _frozen = True
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug(
        "froze the start-up heap",
        extra={"fields": {"objects": frozen, "ms": round((time.perf_counter() - t0) * 1000.0, 1)}},
    )
    return frozen
