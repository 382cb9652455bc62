"""``emotion-agent collect``: one receiver replica, built in one step, run until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from agent import state_dir
from agent.clock import SystemClock
from agent.crypto import Signer, encode, load_private_key
from agent.errors import PayloadError
from agent.fleet.inbox import Inbox
from agent.fleet.receiver import Metrics, Receiver
from agent.fleet.registry import Registry
from agent.fleet.rollup import SiteWindow, claim, due_rollups, site_discovery
from agent.fleet.settings import FleetSettings, MqttSourceSettings
from agent.fleet.store import Store
from agent.fleet.web import FleetWeb
from agent.fleet.witness import Witness

logger = logging.getLogger(__name__)

ROLLUP_EVERY_S = 1.0
INBOX_FAILED = 1
"""Exit code when the inbox stopped for good: systemd's ``Restart=on-failure`` starts it again."""
DATABASE_LOST = 1
"""Exit code when the database stayed unreachable for ``DATABASE_LOST_AFTER_S``."""
DATABASE_LOST_AFTER_S = 60.0
"""Every call to the database failed (at least one a second) for this long: exit, so that a
supervisor restarts the receiver, instead of holding every message unacknowledged for ever."""


def open_inbox(settings: FleetSettings) -> Inbox:
    client = f"emotion-agent-fleet-{settings.receiver_id}"
    if isinstance(settings.source, MqttSourceSettings):
        from agent.fleet.mqtt_inbox import MqttInbox  # noqa: PLC0415 - one transport per replica

        return MqttInbox(settings.source, client)
    from agent.fleet.nats_inbox import NatsInbox  # noqa: PLC0415

    return NatsInbox(settings.source, client)


class StopSignals:
    """SIGTERM and SIGINT for the receiver: the handler appends to a list (one bytecode) and takes
    no lock. It set a ``threading.Event``, whose lock a second signal arriving inside the first
    one's ``set``, or one arriving while the loop's ``wait`` held it, waited for on the same
    thread: the receiver hung for good, deaf to SIGTERM, until systemd's SIGKILL (found by
    review, as in ``agent.service_signals``)."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)


class FleetService:
    def __init__(
        self, settings: FleetSettings, inbox: Inbox | None = None, config_dir: Path | None = None
    ) -> None:
        """``config_dir``: the config file's folder, where a key given by a bare name is read
        when $CREDENTIALS_DIRECTORY does not hold it (``agent.crypto.keys.resolve_key_path``)."""
        self.settings = settings
        self.stop_requested = threading.Event()
        """Set by a caller that runs the receiver in a thread (never by a signal handler)."""
        self.signals = StopSignals()
        self.clock = SystemClock()
        state_dir.prepare(settings.state_dir)  # as the agent's (ours, 0700), before anything opens
        self.store = Store(settings.database)
        self.registry = Registry(
            self.store,
            trust_first_seen=settings.registry.trust_first_seen,
            max_skew_s=settings.max_skew_seconds,
        )
        if settings.registry.keys_dir is not None:
            self.registry.provision(settings.registry.keys_dir, self._now_ms())
        key = load_private_key(settings.private_key, config_dir)
        self.signer = Signer(settings.receiver_id, key, settings.state_dir, self.clock)
        w = settings.witness
        self.witness = (
            Witness(self.store, w.name, load_private_key(w.key, config_dir) if w.key else key)
            if w.enabled
            else None
        )
        self.inbox = inbox or open_inbox(settings)
        self.metrics = Metrics()
        self._announced: set[str] = set()
        self._db_error = ""
        self.receiver = Receiver(
            settings.receiver_id,
            self.store,
            self.registry,
            witness=self.witness,
            signer=self.signer,
            publish=lambda topic, payload, retain: self.inbox.publish(topic, payload, retain=retain),
            metrics=self.metrics,
            now_ms=self._now_ms,
        )
        h, vkey = settings.http, self._witness_vkey
        self.web = (
            FleetWeb(h.host, h.port, settings.receiver_id, self.metrics, self.store, witness_vkey=vkey)
            if h.port
            else None
        )

    @property
    def _witness_vkey(self) -> str | None:
        return None if self.witness is None else self.witness.vkey

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def run(self) -> int:
        """Until SIGTERM or SIGINT (seen within ``ROLLUP_EVERY_S``), ``stop_requested``, or an
        inbox or database lost for good."""
        self.signals.install()
        if self.web is not None:
            self.web.start()
        self.inbox.start(self.receiver.handle)
        logger.info("receiver running", extra={"receiver": self.settings.receiver_id})
        if self.witness is not None:
            logger.info(
                "witness verifier key %s: list it in the devices' audit.witnesses and give it to "
                "audit verify --witness", self._witness_vkey, extra={"receiver": self.settings.receiver_id},
            )
        try:
            while not self.signals.received and not self.stop_requested.wait(ROLLUP_EVERY_S):
                if self.inbox.error is not None:
                    logger.error(
                        "receiver stopping: its inbox stopped for good (%s: %s)",
                        type(self.inbox.error).__name__, self.inbox.error,
                        extra={"receiver": self.settings.receiver_id},
                    )
                    return INBOX_FAILED
                self._tick()
                down = self.store.unreachable_for()
                if down >= DATABASE_LOST_AFTER_S:
                    logger.error(
                        "receiver stopping: the database has been unreachable for %.0f s (%s)",
                        down, self._db_error, extra={"receiver": self.settings.receiver_id},
                    )
                    return DATABASE_LOST
        finally:
            self.stop()
        return 0

    def _tick(self) -> None:
        """Once a second: the rollups, and while the database is away a call that connects
        again, so an outage ends (or ends the process) even when no message comes in."""
        try:
            if self.store.unreachable_for() > 0:
                self.store.query("SELECT 1")
            self.roll_up()
        except self.store.errors as exc:
            text = f"{type(exc).__name__}: {exc}".strip()
            if text != self._db_error:
                rx = self.settings.receiver_id
                logger.warning("database call failed: %s", text, extra={"receiver": rx})
            self._db_error = text
        else:
            self._db_error = ""

    def roll_up(self) -> int:
        """Publish the site windows that are due and that no other replica claimed first."""
        r = self.settings.rollup
        published = 0
        due = due_rollups(
            self.store, r.sites, self._now_ms(), r.grace_seconds * 1000, self.metrics.rollup_unreadable
        )
        for window in due:
            if claim(self.store, window, self.settings.receiver_id):
                if window.site not in self._announced:
                    self.inbox.publish(*site_discovery(window.site, self.settings.receiver_id), retain=True)
                    self._announced.add(window.site)
                topic = f"emotion-agent/site/{window.site}/stats"
                payload = self._signed(topic, window)
                if payload is None:
                    continue
                self.inbox.publish(topic, payload, retain=True)
                published += 1
        return published

    def _signed(self, topic: str, window: SiteWindow) -> bytes | None:
        """The signed site window, or None (logged) when it cannot be signed: that must not end
        the receiver, whose next windows go on."""
        try:
            return encode(self.signer.sign("site-stats", topic, window.to_body()))
        except (PayloadError, ValueError) as exc:
            problem = str(exc)
        logger.error(
            "site window %s of %s could not be signed, left out: %s", window.window_start, window.site,
            problem, extra={"receiver": self.settings.receiver_id},
        )
        return None

    def stop(self) -> None:
        self.inbox.stop()
        if self.web is not None:
            self.web.stop()
        self.signer.close()
        self.store.close()
        time.sleep(0)
