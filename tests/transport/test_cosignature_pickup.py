"""The device subscribes to what the witness sends back and keeps only its own cosigned checkpoints."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.cosignature import cosign
from agent.audit.cosigned import COSIGNATURES_FILE, CosignatureInbox
from agent.audit.note import sign_checkpoint
from agent.audit.store import CHECKPOINTS_FILE
from agent.clock import SystemClock
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
from tests.mosquitto import Broker, Subscriber, wait_until


def test_cosigned_checkpoints_published_to_the_device_land_in_its_audit_folder(tmp_path: Path) -> None:
    key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    audit = tmp_path / "state" / "audit"
    audit.mkdir(parents=True)
    note = sign_checkpoint("emotion-agent/lobby-1", 3, b"\x07" * 32, key).note
    (audit / CHECKPOINTS_FILE).write_bytes(note)
    cosigned = note + cosign(note, "witness.test", witness, 1_800_000_000).encode()
    inbox = CosignatureInbox(audit, key.public_key())
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_min_seconds=1, reconnect_max_seconds=1)
        out = MqttOutput(cfg, device_id="lobby-1", state_dir=tmp_path / "state", spool_days=7,
                         clock=SystemClock(), on_cosignature=inbox.accept)
        with Subscriber(broker, ["emotion-agent/lobby-1/status"]) as sub:
            out.start()
            try:
                sub.wait_for("emotion-agent/lobby-1/status")
                topic = "emotion-agent/lobby-1/audit/cosignature"
                other = sign_checkpoint("emotion-agent/lobby-1", 9, b"\x08" * 32, key).note  # not ours
                sub.client.publish(topic, other, qos=1).wait_for_publish(5)
                sub.client.publish(topic, cosigned, qos=1, retain=True).wait_for_publish(5)
                wait_until((audit / COSIGNATURES_FILE).exists, what="the cosigned note kept")
            finally:
                out.stop()
    assert (audit / COSIGNATURES_FILE).read_bytes() == cosigned
