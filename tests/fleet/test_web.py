"""The fleet page (no JavaScript) in headless Chromium, /metrics in Prometheus text, /healthz."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.cosignature import parse_vkey
from agent.crypto import MemorySequenceStore, Signer
from agent.fleet.inbox import Delivery
from agent.fleet.receiver import Receiver
from agent.fleet.registry import Registry
from agent.fleet.store import Store
from agent.fleet.web import FleetWeb, render_page
from agent.fleet.witness import Witness
from tests.fleet.sim import SimDevice

NOW = 1_800_000_000_000


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FleetWeb]:
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    registry = Registry(store, trust_first_seen=False, max_skew_s=300)
    rx = Receiver(
        "rx-1", store, registry, witness=Witness(store, "w.test", Ed25519PrivateKey.generate()),
        signer=Signer("rx-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore()),
        publish=lambda t, p, r: None, now_ms=lambda: NOW,
    )
    devices = [SimDevice(f"lobby-{i}", tmp_path / f"d{i}") for i in (1, 2)]
    for d in devices:
        d.jwk_file(tmp_path / "keys")
    registry.provision(tmp_path / "keys", NOW)
    for w in range(6):
        for d in devices:
            topic, payload = d.window(60 * w)
            if not (d.name == "lobby-2" and w in (2, 3)):
                rx.handle(Delivery(topic, payload, NOW, lambda: None))
    rx.handle(Delivery(*devices[0].checkpoint(), NOW, lambda: None))
    rx.handle(Delivery("emotion-agent/lobby-1/stats", b'{"forged": 1}', NOW, lambda: None))
    web = FleetWeb("127.0.0.1", 0, "rx-1", rx.metrics, store)
    web.start()
    yield web
    web.stop()
    store.close()


def _get(web: FleetWeb, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{web.port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def test_metrics_and_healthz(served: FleetWeb) -> None:
    status, text = _get(served, "/metrics")
    assert status == 200
    assert 'emotion_fleet_messages_verified_total{receiver="rx-1",device="lobby-1"} 7' in text
    assert 'emotion_fleet_messages_verified_total{receiver="rx-1",device="lobby-2"} 4' in text
    assert 'emotion_fleet_messages_rejected_total{receiver="rx-1",device="lobby-1"} 1' in text
    assert 'emotion_fleet_missing_messages{device="lobby-2"} 2' in text
    assert 'verdict="first"' in text
    assert "# TYPE emotion_fleet_db_seconds summary" in text
    assert _get(served, "/healthz") == (200, "ok\n")


def test_the_fleet_page_in_headless_chromium(served: FleetWeb) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by tools/system-deps.sh"
    profile = tempfile.mkdtemp(prefix="fleet-chromium-")
    try:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", f"http://127.0.0.1:{served.port}/"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = done.stdout
    assert "<script" not in dom
    assert "2 device(s)" in dom
    rows = {row.split("</td>")[0].split(">")[-1]: row for row in dom.split("<tr>")[2:]}
    assert set(rows) == {"lobby-1", "lobby-2"}
    assert "boot 1: 3–4" in rows["lobby-2"]
    assert "size " in rows["lobby-1"]
    assert "none" in rows["lobby-2"]  # no cosigned checkpoint yet


def test_the_fleet_page_shows_the_witness_verifier_key_devices_and_auditors_need(tmp_path: Path) -> None:
    """Devices' ``audit.witnesses`` and ``audit verify --witness`` take the witness's verifier key;
    it could only be derived in Python (docs/fleet.md named a function)."""
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}")
    key = Ed25519PrivateKey.generate()
    vkey = Witness(store, "w.test", key).vkey
    try:
        name, public = parse_vkey(vkey)
        assert (name, public.public_bytes_raw()) == ("w.test", key.public_key().public_bytes_raw())
        assert f"witness verifier key: <code>{vkey}</code>" in render_page(store, vkey)
        assert "<p>witness: off</p>" in render_page(store)
    finally:
        store.close()
