"""The running agent: one place that builds, starts, runs and stops every part, in that order.

    camera feed ─► frame route (admit, lease, zones, vision, face filters) ─► tracker ─► windows
                                                                                          │
           audit log ◄── publisher (sign once, every output) ◄── alerts ◄─────────────────┘

Only this module knows all the parts; each part knows only its own interface. ``Service(cfg)``
builds every part (a part that fails undoes the ones before it); ``run`` starts, loops and
stops. Signals set flags that the loop reads (a handler never takes a lock the loop may hold):
SIGTERM/SIGINT stop after flushing the open window, SIGHUP reloads the config (a bad one is
refused and the old one kept), SIGUSR1 toggles privacy mode. A camera failure is a state,
never a crash.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, cast

from agent import state_dir
from agent.analytics.alerts import AlertEvent, AlertState
from agent.analytics.dp import MICRO, BudgetAccountant, DaySpend
from agent.analytics.health import HealthMeter, HealthPeriods
from agent.analytics.windows import StageLoad, WindowReport
from agent.audit import AuditLog
from agent.audit.cosigned import CosignatureInbox
from agent.audit.dpspend import logged_spend
from agent.audit.imagescan import scan_state
from agent.audit.witnessing import EDGE_FILE, CheckpointProver
from agent.camera.base import open_source
from agent.camera.feed import CameraFeed, CameraState, FeedCounters, SourceOpener
from agent.clock import Clock, SystemClock
from agent.config import AgentConfig, load_config
from agent.crypto import JSON, Signer, public_jwk
from agent.errors import EmotionAgentError
from agent.frame import Frame
from agent.heap_freeze import freeze_long_lived
from agent.memtrim import rare_task
from agent.outputs.base import Output
from agent.outputs.factory import build_outputs
from agent.policy_clock import DateCheck
from agent.preflight import check_files, check_source
from agent.privacy.gate import BudgetLeft, CaptureGate
from agent.privacy.lease import LifetimeRecorder
from agent.privacy.policy import policy_digest, require_allowed, site_today
from agent.privacy.privacy_mode import (
    FlagFilePoller,
    PrivacyMode,
    PrivacyModeEvent,
    SignalToggle,
    Source,
    load_held,
    save_held,
)
from agent.privacy.retention import RetentionEnforcer
from agent.processing import (
    PipelineFactory,
    alert_engine,
    build_processing,
    default_pipeline,
    schedule_of,
    source_options,
)
from agent.publisher import Publisher
from agent.records import (
    changed_keys,
    config_hash,
    frame_counters,
    health_body,
    policy_fields,
    start_fields,
    window_audit_entries,
)
from agent.reload_plan import plan_reload
from agent.route import Carried
from agent.sdnotify import Notifier, watchdog_interval
from agent.service_signals import ServiceSignals
from agent.state_check import StartState, check_state_dir
from agent.transport.command_gate import CommandGate, GateSettings
from agent.transport.discovery import discovery_spec
from agent.transport.drop_tally import DropTally

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.reload_plan import ReloadPlan
    from agent.transport.commands import Command
    from agent.transport.spool_types import DropReport
    from agent.vision.pipeline import VisionPipeline

logger = logging.getLogger(__name__)

IDLE_SLEEP_S = 0.2
PACE_S = 0.5
"""With a camera, what the loop signs it signs at a multiple of this in monotonic time (a pace
point), and a turn waits for a frame at most until the next one (``Service.step``)."""
DUE_MARGIN_S = 0.001
"""A timed task is signed at the first pace point at least this long after it comes due."""
MAX_LOOKAHEAD_S = 2.0
"""At most this: one slow analysis (a cold first one, a Pi swapping) would otherwise keep the
loop idle for whole windows, and a stop waiting. An analysis longer than half of it can push
a timed task to the next pace point."""
LOOKAHEAD_TURNS = 2.0
"""A frame is not taken when a window (or another timed task) comes due within this many of
the longest of the last ``RECENT_ANALYSES`` analyses (at least ``PACE_S``, at most
``MAX_LOOKAHEAD_S``): its inference could run past the pace point where that window is signed
(``Service._pace``)."""
RECENT_ANALYSES = 100
"""Recent, not all-time: the first inference after start (and a crowd long gone) would keep
the loop idle before every window for good."""
STOP_BUDGET_S = 6.0
"""From the start of the stop (``close``) until the outputs have stopped, against the unit's
TimeoutStopSec=20s. What must survive goes to disk first (the open window into the spool, the
``stop`` entry and a checkpoint); the outputs, which wait for a broker (the drain, ``offline``),
get what is left. The rest of the 20 s covers the loop turn running when SIGTERM came (and,
with a camera, its wait for a pace point, at most ``PACE_S``: a wait for a window's pace point
ends at the next one when the stop comes), paho's grace
(``agent.mqtt_client.SHUT_GRACE_S``), the audit log's closing checkpoint and the interpreter's
exit; a test keeps the unit's timeout at least three times this budget."""
RESTART_ONLY = frozenset({"device_id", "keys", "state_dir", "mqtt", "outputs", "audit"})
"""Top-level keys a reload records but that take effect only at the next start."""


class Service:
    """Built whole by the constructor; ``run`` returns the exit code after a clean stop."""

    _camera_lost = False
    """The last camera state systemd was told was "reconnecting" (``_camera_health``)."""
    _stop_paced = False
    """A turn saw the stop and waited for a pace point (``_stop_at_pace``)."""
    _stream_t0: float | None = None
    _stream_now: float | None = None
    _counting_from: float | None = None
    """Window time at which the run began counting (``WindowAggregator.counting_from``)."""
    _stream_floor: float | None = None
    """A file's own time: when it started, where it is now, where the next source goes on
    (``_window_time``)."""
    _memory_of: int | None = None
    """The window whose frames the vision stage last saw (``_window_memory``)."""

    def __init__(
        self,
        cfg: AgentConfig,
        config_path: Path | None = None,
        clock: Clock | None = None,
        *,
        outputs: Sequence[Output] | None = None,
        opener: SourceOpener = open_source,
        pipeline_factory: PipelineFactory = default_pipeline,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self._pipeline_factory = pipeline_factory
        self.notifier = notifier or Notifier()
        commands = cfg.mqtt.commands
        self._commands = CommandGate(
            self.clock,
            GateSettings(
                commands.privacy_min_seconds,
                commands.checkpoint_min_seconds,
                commands.replay_window_seconds,
            ),
        )
        self._started_mono = self.clock.monotonic()
        self._last_watchdog = 0.0
        self._analyses: deque[float] = deque(maxlen=RECENT_ANALYSES)
        """How long the last frames' analyses took (``_pace``)."""
        self._last_counters = FeedCounters()
        self._connects = 0
        """Broker connections seen by the loop (``_reassert_retained``)."""
        self._privacy_state: dict[str, JSON] | None = None
        """The privacy mode's last retained state, as published."""
        self._dates = DateCheck(cfg, self.clock)  # date checks deferred on an unset clock, done once set
        key = self._preflight(cfg, config_path, opener)
        state_dir.prepare(cfg.state_dir)
        checked = self._check_state(cfg.state_dir, key)  # lost or altered state: exit 2
        floor, self._linked_keys = checked.floor, checked.linked_keys  # other keys rotations link
        with ExitStack() as undo:  # a part that fails to build closes the ones built before it
            self.signer = Signer(cfg.device_id, key, cfg.state_dir, self.clock, floor=floor)
            undo.callback(self.signer.close)
            self.audit = AuditLog.open(
                cfg.state_dir / "audit",
                key,
                f"emotion-agent/{cfg.device_id}",
                self.clock,
                cfg.audit,
                retention_days=cfg.retention.audit_days,
                linked_keys=self._linked_keys,
            )
            undo.callback(self.audit.close)
            if self.signer.rebuilt is not None:
                logger.warning("%s", self.signer.rebuilt)
                self.audit.append("error", {"code": "signer_state_rebuilt", "message": self.signer.rebuilt})
            self.outputs = [*(outputs or []), *self._build_outputs(key)]
            base = cfg.mqtt.base_topic or f"emotion-agent/{cfg.device_id}"
            self.publisher = Publisher(self.signer, self.outputs, base, self.audit)
            self.pipeline = pipeline_factory(cfg)
            undo.callback(self.pipeline.close)
            self.recorder = LifetimeRecorder(self.clock)
            self.health = HealthMeter(self.clock)
            self.health_periods = HealthPeriods(cfg.analytics.health_period_seconds)
            self.privacy = self._restore_privacy(cfg)
            self.signals = ServiceSignals(SignalToggle(self.privacy))
            self.flag_poller = self._flag_poller(cfg)
            self.feed = CameraFeed(
                cfg.camera.source,
                source_options(cfg),
                self.clock,
                max_backoff=cfg.camera.reconnect_max_seconds,
                opener=opener,
                on_failure=self._camera_failed,
            )
            self.retention = RetentionEnforcer(
                cfg.retention, [], self.clock,
                hooks={"audit": self.audit.purge, "stats": self._purge_statistics},
            )
            self.tracker, self.aggregator, self.alerts, self.stage, self.route, self._accountant = (
                build_processing(
                    cfg, self.clock, self.pipeline, self.recorder, spend_history=self._logged_spend
                )
            )
            self._last_stage = self.stage.counters  # as the last frame left them (``_stage_load``)
            self.gate = CaptureGate(
                self.feed, self.privacy, self.clock, schedule_of(cfg), self._budget_gate(self._accountant)
            )
            undo.pop_all()
        self.prover = CheckpointProver(cfg.state_dir / "audit", cfg.state_dir / EDGE_FILE)
        self.audit.on_checkpoint = self._publish_checkpoint  # once every part is there
        if not self.outputs:
            logger.warning("no output configured: windows go to the audit log only")

    @staticmethod
    def _preflight(cfg: AgentConfig, config_path: Path | None, opener: SourceOpener) -> Ed25519PrivateKey:
        """Every file the config names, read as check-config reads it; with the real opener, a
        clip that cannot be read is refused naming ``camera.source`` before anything starts."""
        key = check_files(cfg, config_path)
        if opener is open_source:
            check_source(cfg.camera.source)
        return key

    def _check_state(self, folder: Path, key: Ed25519PrivateKey) -> StartState:
        """The whole audit log is verified: minutes on a Pi once it holds months (4 entries a
        window), past the unit's TimeoutStartSec=, so systemd is asked for the time (found by
        review: every start was killed once the log outgrew it)."""
        with self.notifier.extending_start("verifying the audit log"):
            return check_state_dir(folder, key.public_key())

    @property
    def stop_requested(self) -> bool:
        return self.signals.stop_requested

    @property
    def exit_reason(self) -> str:
        """Why the loop ended: a signal's name, ``source_ended``, ``failed`` or ``stopped``."""
        return self.signals.stop_reason

    def _build_outputs(self, key: Ed25519PrivateKey) -> list[Output]:
        self._drops = DropTally(self._audit_drop, self.clock)  # what the spool drops is summed here
        return build_outputs(
            self.cfg,
            self.clock,
            public_key=key.public_key(),
            on_command=self._enqueue_command,
            on_drop=self._spool_dropped,
            on_event=self._transport_event,
            on_cosignature=CosignatureInbox(
                self.cfg.state_dir / "audit", key.public_key(), self.cfg.audit.witness_keys,
                origin=self.audit.origin,
            ).accept,
            previous_keys=self._linked_keys,
        )

    def _logged_spend(self, day: str) -> DaySpend:
        """The budget file is missing: the day's spend as the audit log recorded it."""
        return DaySpend(*logged_spend(self.cfg.state_dir / "audit", day))

    def _budget_gate(self, accountant: BudgetAccountant | None) -> BudgetLeft | None:
        """A camera closes when the day's budget cannot pay for another window (a file replay
        goes on: closing it would restart it)."""
        if accountant is None:
            return None
        cost = round(self.cfg.analytics.dp.epsilon_per_window * MICRO)
        return lambda t: not self.feed.live or accountant.remaining_micro(t) >= cost

    def _spool_dropped(self, report: DropReport) -> None:
        """The spool removed unsent messages (retention or size cap): counted in the audit log,
        summed over 5 s at most (``agent.transport.drop_tally``: one entry per drop fed
        itself with a checkpoint after every entry).

        Called from the MQTT thread too; the tally and the audit log are thread-safe."""
        self._drops.report(report)

    def _audit_drop(self, message: str) -> None:
        self.audit.append("error", {"code": "spool_dropped", "message": message})

    def _transport_event(self, code: str, message: str) -> None:
        """An event the transport reports (a session takeover), from the MQTT thread."""
        self.audit.append("error", {"code": code, "message": message[:500]})

    # --- run ---------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until stopped or a file source ends, then stop cleanly."""
        self.signals.install()
        try:
            self.start()
            while not self.stop_requested:
                self.step()
                if self.feed.state is CameraState.ENDED:
                    self.signals.stop_reason = "source_ended"
                    self._report_lost_frames()
                    break
            if self.feed.live and not self._stop_paced:  # the stop came after the turn's last look
                self.clock.sleep(self._pace_timeout())
        except Exception as exc:
            self._record_failure(exc)
            raise
        finally:
            self.close()
            self.signals.restore()
        return 0

    def _record_failure(self, exc: Exception) -> None:
        """An error that ends the run is said in the audit log (``run_failed``, then a ``stop``
        with reason ``failed``): a ``stop`` saying ``stopped`` alone hid it from an auditor. The
        agent's own errors give their text; an unexpected one only its type and where it was
        raised, since its text could quote any value (an array's, say) and the log outlives it."""
        self.signals.stop_reason = "failed"
        if isinstance(exc, EmotionAgentError):
            message = str(exc)
        else:
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            at = f" at {Path(where.filename).name}:{where.lineno}" if where is not None else ""
            message = f"{type(exc).__name__}{at}"
        try:
            self.audit.append("error", {"code": "run_failed", "message": message[:500]})
        except Exception:  # the log itself may be what failed: the error still propagates
            logger.exception("the run's failure could not be recorded in the audit log")

    def _report_lost_frames(self) -> None:
        """A damaged file ends with a warning and an audit entry saying how many frames were lost."""
        lost = self.feed.lost
        if lost:
            message = f"{self.cfg.camera.source}: {lost} frame(s) could not be decoded (damaged file)"
            logger.warning("%s; the windows cover the rest", message)
            self.audit.append("error", {"code": "source_incomplete", "message": message[:500]})

    def start(self) -> None:
        """Start the outputs, record the start, open the camera if policy and privacy allow."""
        for output in self.outputs:
            output.start()
        for warning in self.cfg.mqtt.warnings() if self.cfg.mqtt.enabled else []:
            logger.warning("%s", warning)
        self.audit.append("start", self._start_fields())
        self.audit.append("key_event", {"event": "boot", "kid": self.signer.kid})
        self.publisher.publish("key", {"jwk": public_jwk(self.signer.public_key)}, retain=True)
        for state in self.alerts.states():  # every rule starts cleared: replaces a dead run's raised
            self._publish_alert_state(state)
        for source in self.privacy.sources_on():  # held by the last run (privacy_mode.json)
            self.audit.append("privacy_mode", {"mode": "on", "source": source})
        self._save_held()  # a switch the policy took away is released on disk too
        self._handle_requests()  # a privacy flag already set keeps the camera closed from the start
        if self._privacy_state is None:  # else the flag's event was just published
            self._privacy_state = cast("dict[str, JSON]", self.privacy.state_payload())
            self.publisher.publish("privacy_mode", self._privacy_state, retain=True)
        self._connects = self._broker_connects()
        self._counting_from = self._window_time(None)
        self.aggregator.counting_from(self._counting_from)
        self._apply_gate()
        freeze_long_lived()  # start-up's objects: walked by no later garbage-collector pass
        self.notifier.ready(f"analysing {self.feed.state.value}")
        logger.info(
            "agent started",
            extra={"fields": {"device": self.cfg.device_id, "boot": self.signer.boot}},
        )

    def _broker_connects(self) -> int:
        """Connections the outputs have made to a broker so far."""
        total = 0
        for output in self.outputs:
            health = getattr(output, "health", None)
            total += health().connects if health is not None else 0
        return total

    def _reassert_retained(self) -> None:
        """After a reconnect, the retained states again, signed anew: a broker restarted without
        persistence came back without them, and Home Assistant showed the device online with
        its alerts and privacy mode unknown until the next change (found by review). The old
        signed bytes cannot be sent again: to a live subscriber they are a replay."""
        connects = self._broker_connects()
        if connects == self._connects:
            return
        first, self._connects = self._connects == 0 and connects == 1, connects
        if first:  # the run's first connect only: start() has just published them
            return
        self.publisher.publish("key", {"jwk": public_jwk(self.signer.public_key)}, retain=True)
        for state in self.alerts.states():
            self._publish_alert_state(state)
        if self._privacy_state is not None:
            self.publisher.publish("privacy_mode", self._privacy_state, retain=True)

    def step(self) -> None:
        """One loop turn: commands and signals, the gate, at most one frame, due windows.

        With a camera, everything that may sign a message runs at a pace point (a multiple of
        ``PACE_S`` in monotonic time), with no frame in hand, before the next frame is taken
        and analysed. Right after an inference, a window's messages, a checkpoint due by time,
        or what a command, a privacy change or a reconnect makes the device sign would carry in
        their time how long that inference took, which grows with the faces in view (found by
        review). Waiting for the camera's next frame was not enough: when analysis is behind
        the camera a frame already waits, and the turn ran right after the inference. So the
        turn waits for the next frame (at most until the next pace point), and when it has
        something to sign, or a window comes due before an analysis could end, sleeps on to
        the pace point (``_pace``); only such turns wait, so a loop behind the camera is slowed
        only when it signs. A stop asked for meanwhile takes no frame; one asked for during an
        inference waits for the next pace point, so the stop's window and checkpoint do not
        time that inference either."""
        live, signs, stopping = self.feed.live, True, False
        if live:
            if self.gate.capturing:
                self.feed.wait_for_frame(self._pace_timeout())
            signs, stopping = self._pace()  # paused too: the turns then follow on from the last inference
        if signs:  # else nothing was due when asked: what came since waits for the next turn's pace point
            self._dates.recheck(self.cfg)  # deferred date checks, once the clock is set (refused: exit 2)
            self._handle_requests()
            self._reassert_retained()
            self.publisher.retry()  # messages an output refused (a full disk), in order
            self._apply_gate()
        if live:
            if signs:
                self._between_frames()
                self._apply_gate()  # a window that spent the day's privacy budget closes the camera now
            if self.stop_requested:
                self._stop_at_pace(paced=stopping)
                return
        frame = self.feed.next_frame(timeout=0.0 if live else 0.5) if self.gate.capturing else None
        if frame is not None:
            self._process(frame)
        else:
            self._camera_health(self.feed.state.value)
            if self.feed.state is not CameraState.ENDED:
                self.clock.sleep(min(IDLE_SLEEP_S, max(self.feed.wait_hint(), 0.01)))
        self._ping_watchdog()
        if not live:  # a clip's windows close on its own time, which the frame moved on
            self._between_frames()
        elif self.stop_requested:  # SIGTERM came during the inference (or the wait for a camera
            self._stop_at_pace(paced=False)  # to reconnect)

    def _stop_at_pace(self, *, paced: bool) -> None:
        """What the stop signs leaves at a pace point, not when the inference (or whatever the
        turn did after its pace point) ended; ``run`` waits for one itself when the stop came
        after the turn's last look."""
        if not paced:
            self.clock.sleep(self._pace_timeout())
        self._stop_paced = True

    def _pace_timeout(self) -> float:
        """Seconds until the next pace point (0 on one): a fixed grid, so that what a turn
        signs there does not move with the inference before it, nor with the ones before that
        (counted from the last frame taken, the points moved with the inferences that delayed
        it, once analysis was behind the camera)."""
        now = self.clock.monotonic()
        return max(0.0, _pace_point(now) - now)

    def _pace(self) -> tuple[bool, bool]:
        """(whether the turn signs, whether a stop was asked for), at a pace point when it signs.

        With something to sign, sleep to the next pace point. With a window, a checkpoint,
        retention, the drops summed or the schedule coming due before a frame's analysis could
        end (``LOOKAHEAD_TURNS``), take no frame: sleep to the pace point at or after that time.
        Otherwise the analysis that ran past it would push what it signs to the next pace
        point, so which point it is would tell whether a long analysis (many faces) was running
        then. Events (a command, a signal, a reconnect) cannot be foreseen: they are signed at
        the pace point after the turn that finds them."""
        if self.stop_requested or self._signs_this_turn():
            self.clock.sleep(self._pace_timeout())
            return True, self.stop_requested  # read at the pace point: a later stop is paced later
        due = self._next_timed()
        recent = LOOKAHEAD_TURNS * max(self._analyses, default=0.0)
        now = self.clock.monotonic()
        if due is None or due > now + min(MAX_LOOKAHEAD_S, max(PACE_S, recent)):
            return False, False
        # A window's end is read through the wall clock (float seconds since 1970: 0.24 us
        # apart): on a pace point, that rounding would pick between two points.
        self._sleep_to(_pace_point(max(due, now) + DUE_MARGIN_S))
        return True, self.stop_requested

    def _sleep_to(self, point: float) -> None:
        """Sleep until the pace point ``point``, one pace point at a time: a stop asked for
        meanwhile (a signal does not end a sleep) ends it at the next one."""
        while (now := self.clock.monotonic()) < point:  # at least once: ``point`` is ahead
            self.clock.sleep(min(point, math.floor(now / PACE_S) * PACE_S + PACE_S) - now)
            if self.stop_requested:
                return

    def _next_timed(self) -> float | None:
        """Monotonic time the first timed task comes due: the open window's end, a checkpoint
        by time, retention, the drops summed, a schedule change (None: none)."""
        mono, wall = self.clock.monotonic(), self.clock.time()
        walls = (self.aggregator.due_at(), self.gate.wake_at())
        times = [
            self.retention.due_at(), self._drops.due_at(), self.audit.checkpoint_due_at(),
            *(mono + (w - wall) for w in walls if w is not None),
        ]
        return min((t for t in times if t is not None), default=None)

    def _signs_this_turn(self) -> bool:
        """Whether the work a turn does before its frame may sign or publish now: a command or
        signal, the clock set while date checks wait for it, a reload, a privacy flag, a
        reconnect, a message waiting, audit entries waiting for the disk, the gate, a window,
        retention, the drops summed, a checkpoint, the command order to save. A turn for which
        this is False skips that work (what came since waits for the next turn), so each is
        asked, not guessed."""
        saved, at = self._order_saved
        flag = self.flag_poller
        return (
            self._commands.due()
            or self._dates.due()  # the clock was set: the deferred date checks, at once
            or self.signals.toggle.pending
            or self.signals.reload_pending
            or (flag is not None and flag.would_change())
            or self._broker_connects() != self._connects
            or self.publisher.held > 0
            or self.audit.waits_for_disk
            or self.gate.would_change()
            or self.aggregator.due(self._window_time(None))
            or self.retention.due()
            or self._drops.due()
            or self.audit.checkpoint_due()
            or (
                self._commands.signed_after_ms != saved
                and self.clock.monotonic() - at >= self.cfg.mqtt.commands.privacy_min_seconds
            )
        )

    def _between_frames(self) -> None:
        """Due windows, retention, the drops summed and a checkpoint due by time."""
        self._close_windows(self._window_time(None))
        self._enforce_retention()
        self._drops.record()  # drops summed in the last 5 s, once they have passed
        self._checkpoint_if_due()

    def _enforce_retention(self) -> None:
        """At start and on the retention timer; the audit log records its own purges."""
        outcome = self.retention.run_if_due()
        if outcome is not None:
            for name in outcome.failed:
                self.audit.append("error", {"code": "retention_failed", "message": name})

    def _purge_statistics(self) -> int | None:
        """The alert baseline's days past ``retention.stats_days`` (the retention timer)."""
        baseline = self.alerts.baseline
        if baseline is None:
            return None
        removed = baseline.purge(self.clock.time())
        if removed:
            logger.info(
                "retention purge",
                extra={"fields": {"kind": "stats", "count": removed, "limit_days": baseline.keep_days}},
            )
        return removed or None

    def _process(self, frame: Frame) -> None:
        """One frame along the route (zeroed when it returns), then into the windows."""
        begun = self._window_memory(frame)
        started = self.clock.monotonic()
        try:
            carried = self.route.carry(frame)
        except Exception:  # zeroed by its lease, unseen: counted as discarded, then the run ends
            self._count_last_frames(failed=1, lifetimes_ms=self.recorder.drain().samples_ms)
            raise
        t = begun if self.feed.live else self._window_time(carried)
        now = self.feed.counters
        last, self._last_counters = self._last_counters, now
        rejected = not carried.admitted
        lifetimes_ms = self.recorder.drain().samples_ms
        self._camera_health(self.feed.state.value)
        self.health.dropped((now.dropped - last.dropped) + rejected)  # not the fps limit's skips
        if rejected:  # over the CPU budget: zeroed unseen, counted, the tracker left alone
            counters = frame_counters(
                now, last, analysed=0, refused=1, lifetimes_ms=lifetimes_ms, load=self._stage_load()
            )
            self.aggregator.add_frame(t, (), counters)
            return
        took = self.clock.monotonic() - started
        self._analyses.append(took)
        self.health.frame(took * 1000.0)
        views = self.tracker.update(carried.faces, t)
        load = self._stage_load(took * 1000.0, frozenset(self.tracker.static_cells(seen_at=t)))
        counters = frame_counters(now, last, analysed=1, refused=0, lifetimes_ms=lifetimes_ms, load=load)
        self.aggregator.add_frame(t, views, counters)

    def _window_memory(self, frame: Frame) -> float:
        """The first frame of a window meets a vision stage with no memory of the window before
        (``VisionStage.new_window``): the change gate's reference and whether it held faces, the
        emotion readings and the budget's cost would otherwise carry how many faces that window
        had into this one's figures (found by review: whether a suppressed window's last frame
        had a person decided whether the next window's first frame was skipped). Returns the
        frame's window time as known before its analysis: a clip's position, or for a camera
        the clock now, at which the frame is then counted, so that an analysis that runs past
        the window's end (seconds on a small board) counts in the window whose memory it had."""
        t = self._window_time(None)
        if not self.feed.live and self._stream_t0 is not None and frame.source_time is not None:
            t = self._stream_t0 + frame.source_time
        start = self.aggregator.window_start(t)
        if self._memory_of is not None and start != self._memory_of:
            self.stage.new_window()
        self._memory_of = start
        return t

    def _stage_load(self, vision_ms: float = 0.0, static: frozenset[str] = frozenset()) -> StageLoad:
        """The vision stage's counters since the last frame, counted into the frame's window."""
        now, last = self.stage.counters, self._last_stage
        self._last_stage = now
        return StageLoad(
            vision_ms=vision_ms,
            detector_skipped=now.detector_skipped - last.detector_skipped,
            emotion_reused=now.emotion_reused - last.emotion_reused,
            budget_dropped=now.budget_dropped - last.budget_dropped,
            static_cells=static,
        )

    def _count_last_frames(self, failed: int = 0, lifetimes_ms: Sequence[float] = ()) -> None:
        """The camera's frames since the last one analysed, before a window closes (at its end,
        a reload, the stop; and into a new aggregator, which must know whether a frame is
        waiting); ``failed``: the frame whose analysis raised, zeroed unseen. A camera's window
        whose end has passed is closing: they are its own (``WindowAggregator.count_closing``),
        whichever of those closes it (a reload at that pace point counted them into the next
        window, found by review)."""
        now = self.feed.counters
        last, self._last_counters = self._last_counters, now
        counters = frame_counters(now, last, analysed=0, refused=0, lifetimes_ms=lifetimes_ms, failed=failed)
        if counters.captured or counters.discarded or counters.dropped or counters.queued:
            t = self._window_time(None)
            if self.feed.live and self.aggregator.due(t):
                self.aggregator.count_closing(counters)
            else:
                self.aggregator.add_frame(t, (), counters)

    def _window_time(self, carried: Carried | None) -> float:
        """Wall clock for cameras; for files, the clip's own time from the moment it started,
        and while the gate keeps the clip closed (privacy mode, outside the schedule) the wall
        clock once it is later: the clip's time stood still meanwhile, so the windows of the
        pause were never opened, never published, and the clip went on after them (a trial saw
        window 180-190 missing). A camera's pause publishes them as quiet windows; so does a
        clip's now."""
        if self.feed.live:
            return self.clock.time()
        if carried is not None:
            if self._stream_t0 is None:  # a new source continues after the last one's time
                start = max(self.clock.time(), self._stream_floor or 0.0)
                self._stream_t0 = start - carried.elapsed
            self._stream_now = self._stream_t0 + carried.elapsed
        if self._stream_now is None:
            return self.clock.time()
        if not self.gate.capturing:
            return max(self._stream_now, self.clock.time())
        return self._stream_now

    # --- windows, alerts, health -----------------------------------------------------------------

    def _close_windows(self, now: float, *, flush: bool = False) -> None:
        """Publish the windows that ended (and sign the checkpoints their entries make due) on
        library pages apart from the frames' (``agent.memtrim.rare_task``)."""
        if self.feed.live and not flush and self.aggregator.due(now):
            self._count_last_frames()  # the frames the camera gave while the loop waited
        reports = self.aggregator.flush(now) if flush else self.aggregator.poll(now)
        if not reports:
            return
        with rare_task():
            for report in reports:
                self._publish_window(report)

    def _checkpoint_if_due(self) -> None:
        """A checkpoint due by time (every ``audit.checkpoint_every_minutes``, which is how a
        device with the default settings signs them: a window adds a few entries, not 100) is
        signed between windows: on library pages of its own too."""
        with rare_task() if self.audit.checkpoint_due() else nullcontext():
            self.audit.maybe_checkpoint()

    def _publish_window(self, report: WindowReport) -> None:
        self.publisher.publish("stats", report.to_body())
        for kind, fields in window_audit_entries(report, scan_state(self.cfg.state_dir)):
            self.audit.append(kind, fields)
        self._publish_alerts(self.alerts.evaluate(report))
        figures = self.health.figures().to_body()
        body = health_body(figures, self.feed.counters, self.stage.counters, self.outputs)
        body["held_messages"] = self.publisher.held
        body["audit_held"] = self.audit.held
        body["storage_error"] = (self.publisher.error or self.audit.write_error or "")[:200] or None
        held = self.health_periods.publishable(body, self._window_time(None), report)
        self.publisher.publish("health", held)

    def _publish_alerts(self, events: Sequence[AlertEvent]) -> None:
        """Each transition on ``alert``, and the rule's new state retained on ``alert/<rule>``."""
        for event in events:
            self.publisher.publish("alert", event.to_body())
            self._publish_alert_state(event.as_state())

    def _publish_alert_state(self, state: AlertState) -> None:
        self.publisher.publish(f"alert/{state.rule}", state.to_body(), retain=True, typ="alert-state")

    def _publish_checkpoint(self, note: bytes) -> None:
        self.publisher.publish("audit/checkpoint", self.prover.body_for(note), retain=True)

    # --- camera, gate, privacy, commands ---------------------------------------------------------

    def _camera_failed(self, why: str) -> None:
        self.stage.pause()  # the gate's thumbnail of the last frame goes with the camera
        self._camera_health(CameraState.RECONNECTING.value)
        self.audit.append("error", {"code": "camera_failed", "message": why[:500]})

    def _camera_health(self, state: str) -> None:
        """The camera's state for the health topic, and for ``systemctl status`` when it is
        lost or back: before, STATUS kept saying "camera capturing" while it reconnected."""
        self.health.camera(state)
        lost = state == CameraState.RECONNECTING.value
        if lost != self._camera_lost:
            self._camera_lost = lost
            self.notifier.status("camera lost, reconnecting" if lost else
                                 "camera capturing" if state == CameraState.UP.value else f"camera {state}")

    def _apply_gate(self) -> None:
        change = self.gate.update()
        if change is None:
            return
        if not change.capturing:
            self.stage.pause()
        else:  # a clip opens again at its start: its time goes on from where it stopped (as a reload's)
            self._stream_floor, self._stream_t0 = self._stream_now, None
        state = "capturing" if change.capturing else str(change.reason)
        self.notifier.status(f"camera {state}")
        # "active" while capturing, as documented (docs/mqtt.md): a null matched no consumer's switch
        reason = change.reason or "active"
        self.publisher.publish("privacy", {"capturing": change.capturing, "reason": reason})

    def _privacy_event(self, event: PrivacyModeEvent | None) -> None:
        if event is None:
            return
        if event.source in ("mqtt", "signal"):
            self._save_held()
        mode = "on" if event.paused else "off"
        self.audit.append("privacy_mode", {"mode": mode, "source": event.source})
        self._privacy_state = cast("dict[str, JSON]", event.as_payload())
        self.publisher.publish("privacy_mode", self._privacy_state, retain=True)

    def _restore_privacy(self, cfg: AgentConfig) -> PrivacyMode:
        """Privacy mode and the signed-command order as the last run left them."""
        held, signed_after = load_held(cfg.state_dir)
        self._commands.resume_order(signed_after)
        self._order_saved: tuple[int | None, float] = (signed_after, -math.inf)
        """The command order last written, and when (monotonic)."""
        return PrivacyMode(self.clock, self._held(cfg, held))

    @staticmethod
    def _held(cfg: AgentConfig, held: dict[Source, bool]) -> dict[Source, bool]:
        """The MQTT switch and the signal as the last run left them; one the policy took away
        holds nothing, as at a reload."""
        switches = cfg.policy.privacy_mode
        allowed = {"mqtt": switches.mqtt, "signal": switches.sigusr1}
        return {s: on for s, on in held.items() if on and allowed[s]}

    def _save_held(self) -> None:
        """The MQTT switch, the signal and the signed-command order, kept for the next start; a
        disk that refuses them is logged and audited, and the mode in force still applies."""
        order = self._commands.signed_after_ms
        self._order_saved = (order, self.clock.monotonic())
        try:
            save_held(self.cfg.state_dir, self.privacy, order)
        except OSError as exc:
            message = f"privacy mode not saved for the next start: {exc.strerror or exc}"
            logger.error("%s", message)  # noqa: TRY400 - the reason is the message
            self.audit.append("error", {"code": "privacy_state_unsaved", "message": message[:500]})

    def _enqueue_command(self, command: Command) -> None:
        """Called from the MQTT thread: the gate coalesces floods and drops duplicates and
        replays; the loop applies what is due."""
        self._commands.offer(command)

    def _handle_requests(self) -> None:
        allowed = self.cfg.policy.privacy_mode
        for command in self._commands.take():
            if command.name == "privacy_mode" and command.on is not None:
                if allowed.mqtt:
                    self._privacy_event(self.privacy.set("mqtt", command.on))
                else:
                    logger.warning("privacy mode command ignored: policy.privacy_mode.mqtt is false")
            elif command.name == "checkpoint":
                self.audit.checkpoint()
        ignored = self.signals.toggle.ignored
        for event in self.signals.toggle.drain(apply=allowed.sigusr1):
            self._privacy_event(event)
        if self.signals.toggle.ignored != ignored:
            logger.warning("SIGUSR1 ignored: policy.privacy_mode.sigusr1 is false")
        if self.flag_poller is not None:
            self._privacy_event(self.flag_poller.poll())
        if self.signals.take_reload():
            self.reload()
        # The gate judges duplicates against the switch as it is, not as last handed out: an
        # ON the policy ignored, or a reload that released the switch, made the next ON a
        # "duplicate", dropped while the camera stayed on (found by review).
        self._commands.in_force("mqtt" in self.privacy.sources_on())
        saved, at = self._order_saved  # a newer order: saved, at most once per privacy interval
        if self._commands.signed_after_ms != saved and (
            self.clock.monotonic() - at >= self.cfg.mqtt.commands.privacy_min_seconds
        ):
            self._save_held()

    # --- reload ------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config; a bad or refused one, or one the next start would refuse (a key
        that takes effect only then naming a file that cannot be used), is reported and the
        running one kept."""
        if self.config_path is None:
            return False
        try:
            new = load_config(self.config_path)
            require_allowed(new, site_today(new, self.clock))
            # The files and folder the next start will read, as it reads them: a key taking effect
            # only then (keys, outputs, state_dir, mqtt) was accepted unread, and that start exited
            # 2, which systemd does not restart (found by review).
            check_files(new, self.config_path)
            state_dir.check(new.state_dir)
            keys = changed_keys(self.cfg, new)
            plan = plan_reload(keys, live=self.feed.live)
            if plan.reopen_source:
                self.feed.check(new.camera.source, source_options(new))
            # Everything that can still refuse the config comes before anything changes: models
            # that cannot load used to escape here after the window was closed and the running
            # pipeline released (found by review).
            pipeline = self._pipeline_factory(new) if plan.new_pipeline else None
        except EmotionAgentError as exc:
            logger.error("reload refused, keeping the running config: %s", exc)  # noqa: TRY400
            self.audit.append("error", {"code": "reload_refused", "message": str(exc)[:500]})
            return False
        fixed = [k for k in keys if k.split(".")[0] in RESTART_ONLY]
        if fixed:
            logger.warning("these keys take effect at the next restart: %s", ", ".join(fixed))
            # Until then they keep their running values everywhere (a new state_dir would have
            # given the privacy budget a fresh accountant, and a fresh day's epsilon).
            new = new.model_copy(update={key: getattr(self.cfg, key) for key in RESTART_ONLY})
        resume_at = None
        if plan.close_window:  # ends at the reload; the next window starts there, new settings
            self._count_last_frames()
            now = self._window_time(None)
            pending = self.aggregator.resume_pending
            reports = self.aggregator.flush(now, reload=True)
            for report in reports:
                self._publish_window(report)
            # The next window starts where the last one published ended (a window closed early
            # ends at the second after `now`; one already over ends where it should), or where
            # this aggregator was itself to resume if it had no window yet (two reloads within a
            # second): never inside a published window, and no second left out.
            ends = [*(r.window_end for r in reports), *([pending] if pending is not None else [])]
            resume_at = max(ends, default=None)
        self.audit.append(
            "config_change",
            {
                "config_hash_before": config_hash(self.cfg),
                "config_hash_after": config_hash(new),
                "keys": keys,
            },
        )
        if policy_digest(new) != policy_digest(self.cfg) or policy_fields(new) != policy_fields(self.cfg):
            self.audit.append("policy_change", {"policy": policy_fields(new), "reason": "reload"})
        self._apply(new, plan, resume_at, pipeline)
        freeze_long_lived()  # the parts the reload replaced are freed, the new ones frozen
        logger.info("config reloaded", extra={"fields": {"changed": len(keys)}})
        return True

    def _apply(
        self, new: AgentConfig, plan: ReloadPlan, resume_at: int | None, pipeline: VisionPipeline | None
    ) -> None:
        """Swap in the parts a new config changes, each through its own methods; what is
        counted in the open window is replaced only together with that window."""
        if plan.reopen_source:
            self._stream_floor, self._stream_t0 = self._stream_now, None
            self.feed.retarget(new.camera.source, source_options(new))
        elif plan.retune_source:
            self.feed.retune(source_options(new))
        previous_alerts = self.alerts
        if plan.close_window:
            carried = self.stage.counters
            self.stage.pause()
            previous_route = self.route
            previous_route.close()
            if pipeline is not None:
                self.pipeline.close()
                self.pipeline = pipeline
            self.tracker, self.aggregator, self.alerts, self.stage, self.route, self._accountant = (
                build_processing(
                    new, self.clock, self.pipeline, self.recorder,
                    carried=carried, spend_history=self._logged_spend, resume_at=resume_at,
                )
            )
            if self._counting_from is not None:  # its first window may still be the run's first
                self.aggregator.counting_from(self._counting_from)
            if not plan.reopen_source:  # the next frame is decoded with the new zones
                previous_route.hand_over(self.route)
            self._count_last_frames()  # the new windows start from the feed's figures as they are now
        else:
            self.alerts = alert_engine(new)
        self._retune(new)
        self.cfg = new
        accountant = self._accountant
        self._publish_alerts(self.alerts.take_over(previous_alerts, at=int(self._window_time(None))))
        for state in self.alerts.states():  # a rule added by the reload gets its first state
            self._publish_alert_state(state)
        for output in self.outputs:  # Home Assistant's entities follow the rules and the window
            update_discovery = getattr(output, "update_discovery", None)
            if update_discovery is not None:
                update_discovery(discovery_spec(new))
        self.gate.reschedule(schedule_of(new), self._budget_gate(accountant))

    def _retune(self, new: AgentConfig) -> None:
        """Give the parts built once at start the values a reload changed: each key a reload
        accepts (not restart-only) must reach what it configures (found by review: the health
        period, the reconnect back-off, the retention days and the privacy flag file kept
        their start values while the audit log recorded the new ones)."""
        period = new.analytics.health_period_seconds
        if period != self.health_periods.period_s:  # held figures start empty: never early
            self.health_periods = self.health_periods.retuned(period)
        self.feed.max_backoff = new.camera.reconnect_max_seconds
        self.retention.retune(new.retention)
        self.audit.retention_days = new.retention.audit_days
        for output in self.outputs:  # the MQTT spool ages unsent messages by spool_days
            update_retention = getattr(output, "update_retention", None)
            if update_retention is not None:
                update_retention(new.retention.spool_days)
        switches = new.policy.privacy_mode
        if switches != self.cfg.policy.privacy_mode:
            self.flag_poller = self._flag_poller(new)
            # A way to pause that the policy no longer has holds privacy mode no more (the others
            # still do: privacy mode is on while any of them says so).
            if switches.flag_file is None:
                self._privacy_event(self.privacy.set("file", False))
            if not switches.mqtt:
                self._privacy_event(self.privacy.set("mqtt", False))
            if not switches.sigusr1:
                self._privacy_event(self.privacy.set("signal", False))

    def _flag_poller(self, cfg: AgentConfig) -> FlagFilePoller | None:
        """``policy.privacy_mode.flag_file``, looked at every ``poll_seconds``."""
        switches = cfg.policy.privacy_mode
        if switches.flag_file is None:
            return None
        return FlagFilePoller(switches.flag_file, self.privacy, self.clock, switches.poll_seconds)

    # --- stop --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, audit the stop and release everything, within ``STOP_BUDGET_S`` (and paho's
        grace) whatever the broker does; ``run`` calls it on its way out. The disk comes first;
        the outputs share what is left of the budget. Each used to wait for the broker on its
        own terms, past systemd's stop timeout when it hung (found by review).

        The audit log closes last: what the outputs report while they stop (a message the broker
        refuses as the spool drains, a session takeover) follows the ``stop`` entry, under the
        closing checkpoint. Closed before them, it refused those entries and the drops were
        recorded nowhere (found by review)."""
        deadline = self.clock.monotonic() + STOP_BUDGET_S
        self.notifier.stopping()
        self.feed.close()  # a frame still waiting is zeroed: counted below, as discarded
        self._count_last_frames()
        self._close_windows(self._window_time(None), flush=True)
        uptime = int((self.clock.monotonic() - self._started_mono) * 1000)
        self.audit.append("stop", {"reason": self.exit_reason, "uptime_ms": uptime})
        self.audit.checkpoint()  # published while the outputs still run
        self.audit.on_checkpoint = None
        self.publisher.close()  # what the outputs still refuse is lost: logged and audited
        for output in self.outputs:
            try:
                output.stop(max(0.0, deadline - self.clock.monotonic()))
            except Exception:  # every output gets its chance to stop
                logger.exception("stopping an output failed")
        self._drops.record(force=True)  # the drain's drops too, under the closing checkpoint
        self.audit.close()  # signs the last one, covering that publish and the outputs' stop
        self.signer.close()
        self.route.close()
        self.pipeline.close()
        logger.info("agent stopped", extra={"fields": {"reason": self.exit_reason}})

    # --- watchdog and start record ---------------------------------------------------------------

    def _ping_watchdog(self) -> None:
        interval = watchdog_interval(None)
        now = self.clock.monotonic()
        if interval is not None and now - self._last_watchdog >= interval / 2:
            self.notifier.watchdog()
            self._last_watchdog = now

    def _start_fields(self) -> dict[str, JSON]:
        from agent.vision.manifest import model_spec, models_folder  # noqa: PLC0415

        cfg = self.cfg
        models_dir = models_folder(cfg.vision.models_dir)
        hashes = {
            name: model_spec(models_dir, name, verify=False).sha256
            for name in (f"face_detection_{cfg.vision.detector}", "emotion")
        }
        return start_fields(cfg, self.signer.boot, hashes)


def _pace_point(t: float) -> float:
    """The first pace point at or after monotonic time ``t``."""
    return math.ceil(t / PACE_S) * PACE_S
