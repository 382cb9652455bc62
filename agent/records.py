"""What the service writes about itself: config and policy digests, audit entries per window.

Pure functions of the config and the window report, so the exact audit content is tested
without a camera or a model. Nothing here can carry a pixel, a box or a track id: the inputs
are the config and integer window figures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from agent import __version__
from agent.analytics.windows import NO_LOAD, FrameCounters, StageLoad, WindowReport
from agent.audit.imagescan import StateScan
from agent.camera.feed import FeedCounters
from agent.config import AgentConfig
from agent.crypto import JSON
from agent.outputs.base import Output
from agent.vision.stage import StageCounters


def config_hash(cfg: AgentConfig) -> str:
    """SHA-256 of the config's canonical JSON: what the audit log records, never the file."""
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def changed_keys(before: AgentConfig, after: AgentConfig) -> list[str]:
    """Top-level and section keys whose values differ, for the config_change audit entry."""
    a, b = before.model_dump(mode="json"), after.model_dump(mode="json")
    keys: list[str] = []
    for name in sorted(set(a) | set(b)):
        va, vb = a.get(name), b.get(name)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += [f"{name}.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        else:
            keys.append(name)
    return keys[:64]


def policy_fields(cfg: AgentConfig) -> dict[str, JSON]:
    """The rules in force, as the audit log's ``start`` and ``policy_change`` entries hold them."""
    dp = cfg.analytics.dp
    return {
        "min_people": cfg.analytics.min_people,
        "window_seconds": cfg.analytics.window_seconds,
        "audit_days": cfg.retention.audit_days,
        "max_frame_lifetime_ms": cfg.audit.max_frame_lifetime_ms,
        "jurisdiction": cfg.site.jurisdiction,
        "context": cfg.site.context,
        "purpose": cfg.site.purpose,
        "dp_epsilon_milli": round(dp.epsilon_per_window * 1000) if dp.enabled else None,
        "dp_daily_budget_milli": round(dp.daily_budget * 1000) if dp.enabled else None,
    }


def start_fields(cfg: AgentConfig, boot: int, model_hashes: dict[str, str]) -> dict[str, JSON]:
    """The ``start`` entry: software, models, config and policy an auditor checks against."""
    return {
        "device_id": cfg.device_id,
        "software_version": __version__,
        "model_hashes": dict(model_hashes),
        "config_hash": config_hash(cfg),
        "policy": policy_fields(cfg),
        "boot": boot,
    }


def frame_counters(
    now: FeedCounters,
    last: FeedCounters,
    *,
    analysed: int,
    refused: int,
    lifetimes_ms: Sequence[float],
    failed: int = 0,
    load: StageLoad = NO_LOAD,
) -> FrameCounters:
    """The frames since the feed's previous snapshot, each counted where its fate happened:
    dropped by the queue, the rate gate or (``refused``) the CPU budget; discarded as the
    camera closed, or (``failed``) zeroed when their analysis raised; ``queued`` is what waits
    right now (not a delta). ``load``: the vision stage's, to which the queue's and the
    budget's drops are added here (``StageLoad.overloaded``)."""
    overloaded = (now.dropped - last.dropped) + refused
    return FrameCounters(
        captured=now.captured - last.captured,
        analysed=analysed,
        dropped=(now.dropped - last.dropped) + (now.skipped - last.skipped) + refused,
        lifetimes_ms=lifetimes_ms,
        discarded=now.discarded - last.discarded + failed,
        queued=now.queued,
        load=replace(load, overloaded=overloaded),
    )


def window_audit_entries(report: WindowReport, scan: StateScan) -> list[tuple[str, dict[str, JSON]]]:
    """The ``frames`` and ``window`` entries for one closed window.

    Each frame figure was counted where it happened (see ``agent.camera.grabber``); none is a
    remainder, so captured + queued before = analysed + dropped + discarded + queued is a check,
    not a definition. ``scan`` is the scan of state_dir taken as the window closed. ``people`` is
    0 when the breakdown was withheld (below k or the privacy budget spent): the device does not
    keep the hidden figure."""
    start_ms = report.window_start * 1000
    length_ms = (report.window_end - report.window_start) * 1000
    frames: dict[str, JSON] = {
        "window_start_ms": start_ms,
        "window_ms": length_ms,
        "captured": report.frames_captured,
        "analysed": report.frames_analysed,
        "dropped": report.frames_dropped,
        "discarded": report.frames_discarded,
        "queued": report.frames_queued,
        "lifetime_max_ms": report.lifetime_max_ms,
        "lifetime_p99_ms": report.lifetime_p99_ms,
        "state_files_scanned": scan.files - scan.unreadable,
        "state_image_files": scan.images,
    }
    window: dict[str, JSON] = {
        "window_start_ms": start_ms,
        "window_ms": length_ms,
        "people": report.people or 0,
        "published": report.breakdown,
        "suppressed": report.suppressed,
        "k": report.k,
        "dp_spent_micro": report.epsilon_spent_micro if report.noise else None,
    }
    return [("frames", frames), ("window", window)]


def health_body(
    figures: Mapping[str, JSON], feed: FeedCounters, stage: StageCounters, outputs: Sequence[Output]
) -> dict[str, JSON]:
    """The ``health`` topic: the meter's figures, camera and vision-stage totals since start, and
    the state of any output that reports one (the MQTT spool)."""
    body: dict[str, JSON] = dict(figures)
    body["frames_captured"] = feed.captured
    body["camera_failures"] = feed.failures
    body["detector_skipped"] = stage.detector_skipped
    body["emotion_reused"] = stage.emotion_reused
    body["budget_dropped"] = stage.budget_dropped
    for output in outputs:
        transport = getattr(output, "health", None)
        if callable(transport):
            h = transport()
            body["spool_backlog"] = h.backlog
            body["spool_dropped"] = h.dropped
            body["mqtt"] = h.state
    return body
