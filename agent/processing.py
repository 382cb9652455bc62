"""The parts of the running agent that a config reload replaces: analytics and the frame route.

The service builds them once at start and again on every accepted reload, handing over the
vision stage's totals so the health topic keeps counting since start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

from agent.analytics.alerts import AlertEngine
from agent.analytics.baseline import Baseline
from agent.analytics.dp import BudgetAccountant, DaySpend, DiscreteLaplace
from agent.analytics.tracker import Tracker
from agent.analytics.windows import WindowAggregator
from agent.camera.base import SourceOptions
from agent.clock import Clock
from agent.config import AgentConfig
from agent.policy_clock import SYNCED_FLAG
from agent.privacy.lease import LifetimeRecorder
from agent.privacy.schedule import Schedule
from agent.privacy.zones import ZoneMask
from agent.route import FaceFilter, FrameRoute
from agent.vision.manifest import detector_input_side
from agent.vision.stage import ZERO_COUNTERS, StageCounters, VisionStage

if TYPE_CHECKING:
    from agent.vision.pipeline import VisionPipeline

PipelineFactory = Callable[[AgentConfig], "VisionPipeline"]


def source_options(cfg: AgentConfig) -> SourceOptions:
    """The camera section's options plus the detector's input side, so a camera that scales in
    hardware (picamera2's lores stream) delivers frames at the detector's letterbox size too."""
    side = detector_input_side(cfg.vision.models_dir, cfg.vision.detector)
    return replace(cfg.camera.source_options(), detector_side=side)


def default_pipeline(cfg: AgentConfig) -> VisionPipeline:
    from agent.vision.pipeline import VisionPipeline  # noqa: PLC0415 - loads LiteRT only when running

    return VisionPipeline.from_config(cfg.vision)


class Processing(NamedTuple):
    """The parts a reload replaces: analytics and the frame route with its vision stage."""

    tracker: Tracker
    aggregator: WindowAggregator
    alerts: AlertEngine
    stage: VisionStage
    route: FrameRoute
    accountant: BudgetAccountant | None
    """The day's differential-privacy budget (None with ``analytics.dp`` off)."""


def build_processing(
    cfg: AgentConfig,
    clock: Clock,
    pipeline: VisionPipeline,
    recorder: LifetimeRecorder,
    *,
    carried: StageCounters = ZERO_COUNTERS,
    spend_history: Callable[[str], DaySpend] | None = None,
    resume_at: int | None = None,
) -> Processing:
    """``carried``: the stage totals of the parts being replaced, so health counts since start;
    ``spend_history``: a day's privacy spend as the audit log recorded it (the budget file lost);
    ``resume_at``: where a reload closed the last window (the first new window starts there)."""
    a = cfg.analytics
    noise = DiscreteLaplace() if a.dp.enabled else None
    accountant = (
        BudgetAccountant(
            cfg.state_dir, a.dp.daily_budget, history=spend_history, synced=(clock, SYNCED_FLAG.exists)
        )
        if a.dp.enabled else None
    )
    stage = VisionStage(pipeline, cfg.vision.gating, carried=carried)
    faces = FaceFilter(min_face_height=cfg.policy.min_face_height, max_faces=cfg.vision.max_faces)
    return Processing(
        tracker=Tracker(a.tracker, clock),
        aggregator=WindowAggregator(a, clock, dp=noise, accountant=accountant, resume_at=resume_at),
        alerts=alert_engine(cfg),
        stage=stage,
        route=FrameRoute(stage, ZoneMask(cfg.policy.zones), recorder, faces),
        accountant=accountant,
    )


def alert_engine(cfg: AgentConfig) -> AlertEngine:
    """The alert rules alone: a reload that changes only them keeps the open window."""
    baseline = Baseline(cfg.state_dir, cfg.analytics.baseline, keep_days=cfg.retention.stats_days)
    return AlertEngine(cfg.analytics.alerts, baseline)


def schedule_of(cfg: AgentConfig) -> Schedule | None:
    return Schedule.from_config(cfg.policy.schedule) if cfg.policy.schedule else None
