"""The shipped examples: every agent config loads and passes the policy; the site example works."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.privacy.policy import require_allowed
from agent.provision.bundle import device_ids, render_config
from agent.provision.site import load_site

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_config"
CONFIGS = sorted(FIRMWARE.glob("*.yaml"))


def test_there_are_examples_for_retail_home_and_transport() -> None:
    assert {p.name for p in CONFIGS} >= {"retail-lobby.yaml", "home.yaml", "transport.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads_and_the_policy_allows_it(path: Path) -> None:
    cfg = load_config(path)
    assert require_allowed(cfg).allowed
    assert str(cfg.keys.private_key) == "device.key", "keys come in as a systemd credential"


INSTALLED = {"/etc/emotion-agent/ca.crt", "/etc/emotion-agent/client.crt", "/etc/emotion-agent/client.key"}
"""The MQTT files docs/installing.md puts on a device (provisioning, then step 6)."""


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_name_only_files_the_documented_install_makes(path: Path) -> None:
    """retail-lobby.yaml named /etc/emotion-agent/mqtt.password, which no step creates and the
    shipped broker (certificates, no passwords) would not read (found by a new-user trial)."""
    cfg = load_config(path)
    if not cfg.mqtt.enabled:
        return
    assert cfg.mqtt.password_file is None
    tls = cfg.mqtt.tls
    named = {str(p) for p in (tls.ca, tls.cert, tls.key) if p is not None} if tls is not None else set()
    assert named <= INSTALLED, named - INSTALLED


def test_site_example_renders_a_valid_config_per_device() -> None:
    site = load_site(FIRMWARE / "sites" / "site-example.yml")
    assert site.broker.ca_cert == FIRMWARE / "sites" / "site-ca.crt"
    ids = device_ids(site, batch=None)  # the example provisions one card (docs/installing.md)
    assert ids == ["lobby-1"]
    cfg = parse_config(render_config(site, ids[0], has_cert=False))
    assert cfg.device_id == "lobby-1"
    assert cfg.mqtt.username == "lobby-1"
    assert cfg.camera.source == "picamera2"
    assert cfg.site.signage is not None
