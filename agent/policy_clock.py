"""Whether the wall clock can be believed for date checks, and the date to check against.

A Raspberry Pi has no real-time clock: until NTP answers it runs on fake-hwclock's last saved
time (or 1970). The EU signage check refuses a confirmation date after today, which on such a
clock would refuse a correct config at every boot before NTP. The rule here: a date check that
would refuse is deferred while the clock is not known to be synchronised (systemd-timesyncd
writes ``/run/systemd/timesync/synchronized`` once it has synced); the start goes on with a
warning, and the check runs again once the clock is synchronised (``DateCheck.recheck``, or
a reload). A clock that is synchronised, or a date that passes anyway, changes nothing.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from agent.clock import Clock
from agent.config import AgentConfig
from agent.privacy.policy import evaluate_policy, require_allowed, site_today

logger = logging.getLogger(__name__)

SYNCED_FLAG = Path("/run/systemd/timesync/synchronized")


def date_for_policy(cfg: AgentConfig, clock: Clock, synced_flag: Path = SYNCED_FLAG) -> date | None:
    """The site's date for policy checks, or None (date checks deferred) on an unsynced clock
    whose date would refuse the config."""
    today = site_today(cfg, clock)
    if synced_flag.exists() or evaluate_policy(cfg, today).allowed == evaluate_policy(cfg).allowed:
        return today
    logger.warning(
        "the clock (%s) is not synchronised yet and the date checks would refuse this config: "
        "deferred until a reload after the clock is set (NTP)", today.isoformat(),
        extra={"fields": {"clock_date": today.isoformat(), "synced_flag": str(synced_flag)}},
    )
    return None


class DateCheck:
    """The site policy at start, with its date checks deferred on an unsynchronised clock
    (``date_for_policy``), and checked once more when they were: the first ``recheck`` after
    the clock is synchronised raises ``PolicyRefused`` for a config the date refuses, as the
    start would have (a Pi that booted before NTP with a signage date still in the future ran
    on until a reload, while the docs said the check waits for the clock)."""

    def __init__(self, cfg: AgentConfig, clock: Clock, synced_flag: Path | None = None) -> None:
        self._clock = clock
        self._flag = SYNCED_FLAG if synced_flag is None else synced_flag
        today = date_for_policy(cfg, clock, self._flag)
        self.deferred = today is None
        require_allowed(cfg, today)

    def due(self) -> bool:
        """Whether ``recheck`` would check now: deferred, and the clock synchronised since (a
        stat of the flag while deferred, nothing after)."""
        return self.deferred and self._flag.exists()

    def recheck(self, cfg: AgentConfig) -> None:
        """Once the clock is synchronised, the deferred date checks."""
        if self.due():
            self.deferred = False
            today = site_today(cfg, self._clock)
            require_allowed(cfg, today)
            logger.info("the clock is synchronised: the policy's date checks pass",
                        extra={"fields": {"today": today.isoformat()}})
