"""The fleet registry follows the key-rotation notice a device's `keys rotate` produces, and
refuses one signed by another key (issue 14 item 4). The notice here is the command's own
output (its JSON-lines copy: the same signed bytes the MQTT spool holds), not a hand-made one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock
from agent.config import load_config
from agent.crypto import MemorySequenceStore, Signer, encode, generate_keypair, kid_for, load_private_key
from agent.fleet.inbox import RETAINED_TOPICS
from agent.fleet.registry import Accepted, Refused, Registry
from agent.fleet.store import Store
from agent.key_rotation import rotate_key

NOW = 1_800_000_000_000
DEVICE = "lobby-1"
BASE = f"emotion-agent/{DEVICE}"


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A provisioned device folder: key A (its public half also in the fleet's keys_dir)."""
    monkeypatch.chdir(tmp_path)
    generate_keypair(tmp_path / "keys")
    (tmp_path / "fleet-keys").mkdir()
    (tmp_path / "keys/device.pub.jwk").rename(tmp_path / f"fleet-keys/{DEVICE}.jwk")
    (tmp_path / "agent.yaml").write_text(f"""schema_version: 1
device_id: {DEVICE}
site: {{jurisdiction: US, context: retail, purpose: analytics}}
camera: {{source: /dev/video0}}
mqtt: {{enabled: false}}
outputs: {{jsonl: "out.jsonl"}}
keys: {{private_key: "keys/device.key"}}
state_dir: "state"
""")
    return tmp_path


@pytest.fixture
def registry(tmp_path: Path, device: Path) -> Registry:
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    reg = Registry(store, trust_first_seen=False, max_skew_s=300)
    assert reg.provision(device / "fleet-keys", NOW) == 1
    return reg


def rotate(device: Path) -> tuple[str, bytes, Ed25519PrivateKey]:
    """Run the rotation; the notice's topic and payload, and the device's new key."""
    clock = FakeClock(NOW / 1000)
    rotate_key(load_config(device / "agent.yaml"), device / "keys/device.key", clock)
    (line,) = (device / "out.jsonl").read_text().splitlines()
    received = json.loads(line)
    return received["topic"], encode(received["payload"]), load_private_key(device / "keys/device.key")


def stats(key: Ed25519PrivateKey, seq: int) -> tuple[bytes, str]:
    """(payload, topic) of a window signed by ``key``, as the registry takes them."""
    signer = Signer(DEVICE, key, store=MemorySequenceStore(9, seq), clock=FakeClock(NOW / 1000))
    return encode(signer.sign("stats", f"{BASE}/stats", {"people": 5})), f"{BASE}/stats"


def test_the_registry_follows_the_devices_notice(registry: Registry, device: Path) -> None:
    topic, notice, new = rotate(device)
    assert topic == f"{BASE}/key-rotation"
    assert "key-rotation" in RETAINED_TOPICS  # every replica subscribes to it plainly
    before = registry.check(*stats(new, 1), NOW)
    assert isinstance(before, Refused)
    assert "unknown kid" in before.reason
    followed = registry.check(notice, topic, NOW)
    assert isinstance(followed, Accepted)
    assert followed.note.startswith(f"key {kid_for(new.public_key())} announced by ")
    assert isinstance(registry.check(*stats(new, 2), NOW), Accepted)
    assert [kid_for(k) for k in registry.keys_for(DEVICE)].count(kid_for(new.public_key())) == 1


def test_a_notice_signed_by_another_key_is_refused(registry: Registry, device: Path) -> None:
    topic, notice, new = rotate(device)
    real = json.loads(notice)
    intruder = Ed25519PrivateKey.generate()
    signer = Signer(DEVICE, intruder, store=MemorySequenceStore(real["boot"], real["seq"]))
    forged = encode(signer.sign("key-rotation", topic, real["body"]))
    refused = registry.check(forged, topic, NOW)
    assert isinstance(refused, Refused)
    assert f"unknown kid {kid_for(intruder.public_key())}" in refused.reason
    assert isinstance(registry.check(*stats(new, 1), NOW), Refused)  # the new key is still unknown
