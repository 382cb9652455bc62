"""Warnings about input from outside, said once and then at most once a minute per kind.

What the network sends the agent (commands, cosignatures, a receiver's messages) is refused
with a warning naming why. A flood of it made a log line each: 20,000 invalid commands were
20,000 journal lines (found by a hostile-input probe). The first of a kind is logged at once;
the next ones within ``every`` seconds are counted, and the count is added to the next line of
that kind that is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

EVERY_S = 60.0


class Throttled:
    """``warning(kind, msg, *args)``: as ``logger.warning``, at most once per ``every`` s per kind."""

    def __init__(
        self, logger: logging.Logger, every: float = EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}
        """kind -> (when its last line was logged, how many were held since)."""

    def warning(self, kind: str, msg: str, *args: object, **kwargs: Any) -> None:
        """``kwargs`` go to ``logger.warning`` as they are (``extra``)."""
        with self._lock:
            now = self._clock()
            last, held = self._kinds.get(kind, (None, 0))
            if last is not None and now - last < self._every:
                self._kinds[kind] = (last, held + 1)
                return
            self._kinds[kind] = (now, 0)
        if held:
            msg += f" (and {held} more like it since the last such line)"
        self._logger.warning(msg, *args, **kwargs)
