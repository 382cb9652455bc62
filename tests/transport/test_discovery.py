"""Home Assistant discovery: one device message whose templates read the signed envelopes.

Templates are rendered with Jinja2 the way Home Assistant does (sandboxed environment, the
payload parsed as ``value_json``; a rendered ``None`` means *unknown*, an empty string is
ignored by a binary_sensor), so a broken template fails here, not in a facility's dashboard.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.config import load_config
from agent.transport.announced import FILE_NAME, load_announced, load_record, save_announced
from agent.transport.discovery import (
    DiscoverySpec,
    announcements,
    build_discovery,
    build_entity_configs,
    discovery_spec,
    encode_discovery,
    platforms,
    retired_components,
    retractions,
)
from tests.test_service import write_config

BASE = "emotion-agent/lobby-1"
SPEC = DiscoverySpec("lobby-1", BASE, window_seconds=60, expire_after_windows=3,
                     alert_rules=("stress", "crowd-anger"), sw_version="0.1.0")


def _timestamp_custom(value: float, fmt: str, local: bool = True) -> str:
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime(fmt)


ENV = ImmutableSandboxedEnvironment()
ENV.filters["timestamp_custom"] = _timestamp_custom


def render(component: str, body: dict[str, Any], **envelope: Any) -> str:
    template = build_discovery(SPEC)["cmps"][component]["value_template"]
    value_json = {"v": 1, "typ": "stats", "ts": 1_700_000_000_000, "body": body, **envelope}
    return ENV.from_string(template).render(value_json=value_json, value=json.dumps(value_json))


WINDOW = {"people": 12, "suppressed": None, "shares_pm": {"happy": 415, "neutral": 500, "angry": 85},
          "valence_milli": 250, "arousal_milli": -125}
SUPPRESSED = {"people": 3, "suppressed": "below_k", "shares_pm": None, "valence_milli": None,
              "arousal_milli": None}


def test_the_message_is_device_based_and_retained_under_the_prefix() -> None:
    disco = build_discovery(SPEC)
    assert SPEC.topic == "homeassistant/device/emotion_agent_lobby-1/config"
    assert disco["dev"]["ids"] == ["emotion_agent_lobby-1"]
    assert disco["o"] == {"name": "emotion-agent", "sw": "0.1.0"}
    assert disco["availability_topic"] == f"{BASE}/status"
    assert all("p" in c and "unique_id" in c for c in disco["cmps"].values())
    ids = [c["unique_id"] for c in disco["cmps"].values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", k) for k in disco["cmps"])
    assert json.loads(encode_discovery(SPEC)) == disco


def test_statistics_are_measurements_that_expire_after_three_windows() -> None:
    cmps = build_discovery(SPEC)["cmps"]
    stats = [k for k in cmps if k == "people" or k.startswith("share_") or k in ("valence", "arousal")]
    assert len(stats) == 3 + 7
    for key in stats:
        assert cmps[key]["state_topic"] == f"{BASE}/stats"
        assert cmps[key]["state_class"] == "measurement"
        assert cmps[key]["expire_after"] == 180


@pytest.mark.parametrize(
    ("component", "window", "suppressed"),
    [
        ("people", "12", "3"),
        ("share_happy", "41.5", "None"),
        ("share_angry", "8.5", "None"),
        ("share_fear", "None", "None"),
        ("valence", "0.25", "None"),
        ("arousal", "-0.125", "None"),
    ],
)
def test_a_suppressed_window_renders_unknown_not_zero(component: str, window: str, suppressed: str) -> None:
    assert render(component, WINDOW) == window
    assert render(component, SUPPRESSED) == suppressed


def test_absent_fields_also_render_unknown() -> None:
    assert render("share_happy", {"people": 2}) == "None"
    assert render("valence", {"people": 2}) == "None"


@pytest.mark.parametrize(
    ("rule", "state", "expected"),
    [("stress", "raised", "ON"), ("stress", "cleared", "OFF"), ("crowd-anger", "raised", "None"),
     ("stress", "odd", "None")],
)
def test_each_alert_binary_sensor_follows_only_its_own_rule(rule: str, state: str, expected: str) -> None:
    """Each rule has its own retained topic; anything but its own state there is unknown, never OFF."""
    assert render("alert_stress", {"rule": rule, "state": state}) == expected


def test_each_alert_binary_sensor_reads_its_rules_retained_state_topic() -> None:
    cmps = build_discovery(SPEC)["cmps"]
    assert cmps["alert_stress"]["state_topic"] == f"{BASE}/alert/stress"
    assert cmps["alert_crowd-anger"]["state_topic"] == f"{BASE}/alert/crowd-anger"
    empty = ENV.from_string(cmps["alert_stress"]["value_template"]).render(value="")
    assert empty == "None"


def test_diagnostics_read_the_health_and_checkpoint_messages() -> None:
    cmps = build_discovery(SPEC)["cmps"]
    assert render("fps", {"fps_milli": 4987}) == "5.0"
    assert render("frames_dropped", {"drops": 7}) == "7"
    assert render("spool_backlog", {}) == "None"
    assert render("last_checkpoint", {"size": 10}) == "2023-11-14T22:13:20+00:00"
    assert all(cmps[k]["entity_category"] == "diagnostic"
               for k in ("fps", "frames_dropped", "spool_backlog", "last_checkpoint", "public_key"))


def test_the_public_key_is_an_attribute_of_the_signing_key_sensor() -> None:
    key = build_discovery(SPEC)["cmps"]["public_key"]
    assert key["json_attributes_topic"] == f"{BASE}/key"
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": "K" * 43}
    signed = {"v": 1, "typ": "key", "kid": "K" * 43, "body": {"jwk": jwk}, "sig": "s"}
    for shape in (jwk, signed):
        assert ENV.from_string(key["value_template"]).render(value_json=shape) == "K" * 43
        attributes = ENV.from_string(key["json_attributes_template"]).render(value_json=shape)
        assert json.loads(attributes) == jwk


def test_the_privacy_switch_and_checkpoint_button_use_the_command_topics() -> None:
    cmps = build_discovery(SPEC)["cmps"]
    assert cmps["privacy_mode"]["command_topic"] == f"{BASE}/cmd/privacy_mode/set"
    assert (cmps["privacy_mode"]["payload_on"], cmps["privacy_mode"]["payload_off"]) == ("ON", "OFF")
    assert render("privacy_mode", {"state": "ON", "changed_by": "mqtt"}) == "ON"
    cleared = ENV.from_string(cmps["privacy_mode"]["value_template"]).render(value="")
    assert cleared == "None", "the empty retained message left at start shows as unknown"
    assert cmps["checkpoint"]["command_topic"] == f"{BASE}/cmd/checkpoint"
    assert cmps["checkpoint"]["payload_press"] == "PRESS"


def test_the_signing_key_id_is_the_device_serial_number() -> None:
    assert "sn" not in build_discovery(SPEC)["dev"]
    spec = DiscoverySpec("lobby-1", BASE, key_id="K" * 43)
    assert build_discovery(spec)["dev"]["sn"] == "K" * 43


def test_odd_characters_in_names_become_valid_ids() -> None:
    spec = DiscoverySpec("lobby-1", BASE, alert_rules=("anger spike!",), emotions=("happy",))
    cmps = build_discovery(spec)["cmps"]
    assert "alert_anger_spike_" in cmps
    assert "share_happy" in cmps
    assert "rule == 'anger spike!'" in cmps["alert_anger_spike_"]["value_template"]


def test_per_entity_messages_leave_out_the_serial_number_older_home_assistant_refuses() -> None:
    """Home Assistant 2023.9 has no ``sn`` in its strict device schema: an entity carrying it
    would be refused whole. The device message (2024.11+) keeps it."""
    spec = DiscoverySpec("lobby-1", BASE, key_id="K" * 43, mode="entities")
    configs = build_entity_configs(spec)
    assert configs
    assert all("sn" not in cfg["dev"] for cfg in configs.values())
    assert all(cfg["dev"]["ids"] == ["emotion_agent_lobby-1"] for cfg in configs.values())
    assert build_discovery(spec)["dev"]["sn"] == "K" * 43


def test_the_mode_decides_which_topics_are_announced_and_which_cleared() -> None:
    device = DiscoverySpec("lobby-1", BASE, alert_rules=("stress",))
    entities = DiscoverySpec("lobby-1", BASE, alert_rules=("stress",), mode="entities")
    off = DiscoverySpec("lobby-1", BASE, alert_rules=("stress",), mode="off")
    assert list(announcements(device)) == ["homeassistant/device/emotion_agent_lobby-1/config"]
    per_entity = set(announcements(entities))
    assert len(per_entity) == 18
    assert "homeassistant/sensor/emotion_agent_lobby-1/people/config" in per_entity
    assert "homeassistant/button/emotion_agent_lobby-1/checkpoint/config" in per_entity
    assert announcements(off) == {}
    # With a record: exactly what is no longer announced. Without: the other mode's topics
    # (with commands on or off: the read-only privacy mode's too).
    assert retractions(entities, [device.topic]) == [device.topic]
    assert retractions(entities, sorted(per_entity)) == []
    read_only = device.entity_topic("binary_sensor", "privacy_state")
    assert retractions(device, None) == sorted(per_entity | {read_only})
    assert retractions(off, None) == sorted(per_entity | {device.topic, read_only})
    gone = "homeassistant/binary_sensor/emotion_agent_lobby-1/alert_old/config"
    assert retractions(entities, [*per_entity, gone]) == [gone]


def test_every_entity_carries_qos_1_and_the_device_message_no_root_qos() -> None:
    """Home Assistant does not pass a device-level qos on to the components."""
    disco = build_discovery(SPEC)
    assert "qos" not in disco
    assert all(c["qos"] == 1 for c in disco["cmps"].values())
    entities = build_entity_configs(SPEC)
    assert all(c["qos"] == 1 and c["availability_topic"] == f"{BASE}/status" for c in entities.values())


def test_health_diagnostics_expire_so_privacy_mode_shows_no_stale_figures() -> None:
    cmps = build_discovery(SPEC)["cmps"]
    for key in ("fps", "frames_dropped", "spool_backlog"):
        assert cmps[key]["expire_after"] == 180, key


def test_a_damaged_record_of_announced_topics_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "discovery-announced.json").write_text("[" * 100_000)  # RecursionError was a traceback
    assert load_announced(tmp_path) is None


def test_device_mode_retires_a_component_it_no_longer_has_with_its_platform_alone() -> None:
    """Home Assistant 2024.11+ keeps a component a device message leaves out; ``{"p": ...}``
    alone removes it."""
    before = platforms(SPEC)
    now = DiscoverySpec("lobby-1", BASE, alert_rules=("stress",))
    retired = retired_components(now, before)
    assert retired == {"alert_crowd-anger": "binary_sensor"}
    cmps = build_discovery(now, retired)["cmps"]
    assert cmps["alert_crowd-anger"] == {"p": "binary_sensor"}
    assert cmps["alert_stress"]["p"] == "binary_sensor"
    assert len(cmps["alert_stress"]) > 1
    assert retired_components(SPEC, before) == {}
    # a rule back again is announced in full, not retired
    assert "name" in build_discovery(SPEC, retired)["cmps"]["alert_crowd-anger"]
    # turning commands off retires the switch and the button
    quiet = DiscoverySpec("lobby-1", BASE, alert_rules=SPEC.alert_rules, commands=False)
    assert retired_components(quiet, before) == {"privacy_mode": "switch", "checkpoint": "button"}
    # entities mode clears topics instead
    assert announcements(DiscoverySpec("lobby-1", BASE, mode="entities"), retired) == announcements(
        DiscoverySpec("lobby-1", BASE, mode="entities")
    )


def test_commands_off_announces_privacy_mode_read_only_and_retracts_the_controls_without_a_record() -> None:
    quiet = DiscoverySpec("lobby-1", BASE, mode="entities", commands=False)
    topics = set(announcements(quiet))
    assert not any("/switch/" in t or "/button/" in t for t in topics)
    state = json.loads(announcements(quiet)[quiet.entity_topic("binary_sensor", "privacy_state")])
    assert state["state_topic"] == f"{BASE}/privacy_mode"
    assert "command_topic" not in state
    gone = retractions(quiet, None)
    assert "homeassistant/switch/emotion_agent_lobby-1/privacy_mode/config" in gone
    assert "homeassistant/button/emotion_agent_lobby-1/checkpoint/config" in gone


def test_the_record_keeps_the_device_messages_components_and_an_older_record_retires_nothing(
    tmp_path: Path,
) -> None:
    save_announced(tmp_path, [SPEC.topic], {"alert_x": "binary_sensor"})
    record = load_record(tmp_path)
    assert record is not None
    assert record.components == {"alert_x": "binary_sensor"}
    (tmp_path / FILE_NAME).write_text(json.dumps({"topics": [SPEC.topic]}))  # before components
    record = load_record(tmp_path)
    assert record is not None
    assert record.topics == [SPEC.topic]
    assert record.components == {}
    (tmp_path / FILE_NAME).write_text(json.dumps({"topics": [], "components": {"a": 1}}))
    record = load_record(tmp_path)
    assert record is not None
    assert record.components == {}


def test_a_privacy_switch_the_policy_does_not_obey_is_not_offered(tmp_path: Path) -> None:
    """``policy.privacy_mode.mqtt: false``: the agent ignores the switch, so Home Assistant shows
    privacy mode read-only; the checkpoint button, which it still obeys, stays."""
    path = write_config(tmp_path, "scripted.mp4", extra="policy: {privacy_mode: {mqtt: false}}\n")
    spec = discovery_spec(load_config(path))
    assert not spec.privacy_switch
    wanted = ("privacy_mode", "privacy_state", "checkpoint")
    controls = {k: p for k, p in platforms(spec).items() if k in wanted}
    assert controls == {"privacy_state": "binary_sensor", "checkpoint": "button"}
