"""A full spool during a long outage (found by review): neither a crash nor a window spooled twice.

Wired as ``Service`` wires it: the spool's ``on_drop`` appends ``spool_dropped`` to the audit
log, and the audit log's ``on_checkpoint`` publishes ``audit/checkpoint``. With the broker down
long enough for the size cap to bite, every ``put`` drops the oldest row *inside*
``Publisher.publish`` -> ``MqttOutput.send`` -> ``Spool.put`` -> ``enforce_limits``. When that
drop's audit entry is the one that makes a checkpoint due (every 100 entries by default), the
checkpoint is published re-entrantly: the inner ``Publisher.retry`` sends the outer message
(still at the head of ``_waiting``) a second time and pops it, then the outer ``retry`` pops
again: ``IndexError: pop from an empty deque`` escaped ``publish`` (the service loop died) and the
same signed window sat in the spool twice (a verifier rejects the second as a replay).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditLog
from agent.audit.settings import AuditConfig
from agent.clock import SystemClock
from agent.crypto import MemorySequenceStore, Signer, public_jwk
from agent.publisher import Publisher
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
from agent.transport.spool_types import DropReport
from tests.mosquitto import free_port

DEVICE = "lobby-1"
BASE = f"emotion-agent/{DEVICE}"


def test_a_size_cap_drop_that_makes_a_checkpoint_due_neither_crashes_nor_duplicates(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    clock = SystemClock()
    signer = Signer(DEVICE, key, store=MemorySequenceStore(), clock=clock)
    audit = AuditLog.open(tmp_path / "audit", key, BASE, clock, AuditConfig())

    def spool_dropped(report: DropReport) -> None:  # Service._spool_dropped
        message = f"{report.count} unsent message(s), {report.bytes} bytes, dropped: {report.reason}"
        audit.append("error", {"code": "spool_dropped", "message": message})

    # The broker is down (nothing listens on the port): everything stays in the 1 MiB spool.
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), spool_max_mb=1)
    out = MqttOutput(cfg, device_id=DEVICE, state_dir=tmp_path / "state", spool_days=7, clock=clock,
                     on_drop=spool_dropped, public_key=public_jwk(key.public_key()))
    publisher = Publisher(signer, [out], BASE, audit)
    audit.on_checkpoint = lambda note: publisher.publish(  # Service._publish_checkpoint
        "audit/checkpoint", {"note_bytes": len(note)}, retain=True
    )
    body = {f"zone{i}": i for i in range(1500)}  # ~17 KB: the 1 MiB cap is reached after ~60
    crashed = None
    try:
        for window in range(300):
            body["window"] = window
            try:
                publisher.publish("stats", body)
            except Exception as exc:
                crashed = f"window {window}: {type(exc).__name__}: {exc}"
                break
    finally:
        out.stop(timeout=0.1)
        audit.close()
    db = sqlite3.connect(tmp_path / "state" / "spool.sqlite3")
    seqs = [json.loads(p)["seq"] for (p,) in db.execute("SELECT payload FROM spool ORDER BY id")]
    db.close()
    twice = sorted({s for s in seqs if seqs.count(s) > 1})
    assert crashed is None, f"publish raised ({crashed})"
    assert not twice, f"seqs spooled twice: {twice}"


def test_a_checkpoint_after_every_entry_with_a_full_spool_does_not_publish_endlessly(tmp_path: Path) -> None:
    """``audit.checkpoint_every_entries: 1`` and the broker down long enough for the spool's size
    cap to bite, wired by ``Service`` itself. Was: each checkpoint's message dropped a spooled row,
    the ``spool_dropped`` entry for that drop made the next checkpoint due, whose message dropped
    the next row, and so on: ``publish`` never returned (the loop turned forever, signing and
    spooling checkpoints). Now drops are summed into one entry per reason at most once every
    5 s (``agent.transport.drop_tally``): the publish returns, every dropped message is still
    counted in the audit log once the service stops, and the log verifies."""
    from agent.audit.entries import decode_entry  # noqa: PLC0415
    from agent.audit.verify import verify_log  # noqa: PLC0415
    from agent.clock import FakeClock  # noqa: PLC0415
    from agent.config import load_config  # noqa: PLC0415
    from agent.crypto import load_public_key  # noqa: PLC0415
    from agent.service import Service  # noqa: PLC0415
    from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, write_config  # noqa: PLC0415

    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + "audit: {checkpoint_every_entries: 1}\n")
    path.write_text(path.read_text().replace("mqtt: {enabled: false}", (
        f"mqtt: {{host: 127.0.0.1, port: {free_port()}, spool_max_mb: 1, commands: {{enabled: false}}}}")))
    service = Service(
        load_config(path), path, FakeClock(start=1_800_000_000.0),
        opener=lambda s, o, c: ScriptedSource(c, 10, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    done: list[int] = []

    def publish_windows() -> None:
        # Rows no larger than a checkpoint's message (~1 KB): once the 1 MiB cap is reached after
        # ~2,000 of them, each checkpoint's message drops a row and gains no room for the next.
        for window in range(3000):
            service.publisher.publish("stats", {"window": window, "pad": "x" * 200})
            done.append(window)

    worker = threading.Thread(target=publish_windows, daemon=True)
    service.start()
    try:
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), f"publish did not return (window {len(done)}): checkpoints without end"
    finally:
        if not worker.is_alive():
            service.close()
    mqtt = service.outputs[-1]
    assert isinstance(mqtt, MqttOutput)
    dropped = sum(mqtt.health().dropped.values())
    assert dropped > 0, "the spool's size cap never bit"
    audit = tmp_path / "state" / "audit"
    entries = [decode_entry(line) for p in sorted(audit.glob("segment-*.jsonl"))
               for line in p.read_bytes().splitlines()]
    recorded = [e.data["message"] for e in entries if e.kind == "error" and e.data["code"] == "spool_dropped"]
    assert sum(int(m.split()[0]) for m in recorded) == dropped, recorded
    assert len(recorded) < 10, f"{len(recorded)} drop entries for one outage"
    result = verify_log(audit, load_public_key(tmp_path / "keys" / "device.pub.jwk"))
    assert result.problems == []
