"""Leave the long-lived objects out of the garbage collector's passes (``gc.freeze``).

Start-up (imports, the config, the opened models; in ``run`` the audit log and MQTT as well)
leaves tens of thousands of long-lived objects tracked by Python's cyclic garbage collector,
and each of its passes over the older generations walks them all again. On the bench VM, with
the 47,000 objects of ``bench``, a generation-1 pass took 7-12 ms and a full one 32 ms, each in
the middle of some frame whose pixels stayed alive meanwhile (in ``bench`` over the demo clip,
one pass in 100 frames: 0.12 ms of glue per frame). Collected and frozen when start-up ends
(and again after a reload, which replaces the models and the windows' parts), those objects
are never walked again; what the loop allocates afterwards is collected as before.

Each call first unfreezes what the last one froze and collects it with the rest: an object
frozen and later dropped in a reference cycle (a pipeline a reload replaced) is freed then,
instead of never.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze_long_lived() -> int:
    """Collect every generation's garbage (the frozen objects' included), then freeze every
    object still tracked; how many that is."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug(
        "froze the long-lived objects",
        extra={"fields": {"objects": frozen, "ms": round((time.perf_counter() - t0) * 1000.0, 1)}},
    )
    return frozen
