"""The enforcer drives the parts that purge themselves: the real audit log and the real MQTT spool."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.clock import FakeClock
from agent.privacy.retention import DAY_S, RetentionEnforcer
from agent.privacy.settings import RetentionConfig
from agent.transport.spool import Spool
from agent.transport.spool_types import DropReport


def test_audit_segments_and_spooled_messages_past_retention_go_on_the_timer(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = RetentionConfig(spool_days=7, audit_days=30, interval_minutes=60)
    log = AuditLog.open(tmp_path / "audit", Ed25519PrivateKey.generate(), "ea/test/audit", clock,
                        AuditConfig(checkpoint_every_entries=10, segment_max_entries=10),
                        retention_days=cfg.audit_days)
    spool = Spool(tmp_path / "spool.sqlite3", clock, max_bytes=1_000_000,
                  max_age_seconds=cfg.spool_days * DAY_S)
    try:
        for i in range(25):
            log.append("error", {"code": "test", "message": f"entry {i}"})
        spool.put("emotion-agent/a/stats", b"{}")
        enforcer = RetentionEnforcer(cfg, [], clock,
                                     hooks={"audit": log.purge, "spool": spool.enforce_limits})
        first = enforcer.run_if_due()
        assert first is not None
        assert (first.reports, first.failed) == ([], [])  # nothing is old yet

        clock.advance(8 * DAY_S)
        late = enforcer.run_if_due()
        assert late is not None
        (drops,) = late.reports  # the spool's message is past 7 days; the log is not past 30
        assert isinstance(drops, list)
        assert [(d.reason, d.count) for d in drops if isinstance(d, DropReport)] == [("retention", 1)]

        for i in range(10):
            log.append("error", {"code": "test", "message": f"later {i}"})
        clock.advance(23 * DAY_S)
        before = {p.name for p in (tmp_path / "audit").glob("segment-*.jsonl")}
        final = enforcer.run_if_due()
        assert final is not None
        (purge,) = final.reports  # the audit log's own purge entry
        assert isinstance(purge, dict)
        removed = {seg["name"] for seg in purge["segments"]}
        after = {p.name for p in (tmp_path / "audit").glob("segment-*.jsonl")}
        assert removed
        assert removed <= before
        assert not removed & after
        assert before - removed <= after  # (the purge entry itself may open a new segment)
        cutoff_ms = int((clock.time() - 30 * DAY_S) * 1000)
        assert purge["cutoff_ms"] == cutoff_ms
        assert all(seg["last_ts_ms"] < cutoff_ms for seg in purge["segments"])
        texts = [(tmp_path / "audit" / n).read_text() for n in sorted(after)]
        newest_kept = [max(json.loads(line)["ts"] for line in text.splitlines())
                       for text in texts]
        assert all(ts >= cutoff_ms for ts in newest_kept)  # every kept segment holds recent entries
    finally:
        spool.close()
        log.close()
