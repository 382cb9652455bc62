"""Discovery judged by Home Assistant's own MQTT schemas, in both modes.

The checker (``tools/ha_check_discovery.py``) runs in ``.venv-ha``, where ``make ha-venv``
installs ``homeassistant`` 2024.3.3, the newest that installs on Python 3.11: every entity of
both modes goes through that version's platform ``DISCOVERY_SCHEMA``; a device message is split
into components as 2024.11 does first. Keys Home Assistant would silently drop are errors.
``entities`` mode is also checked with 2023.9.3 (``.venv-ha-2023``), from before device-based
discovery and before ``sn`` in the device block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.transport.discovery import DiscoverySpec, announcements, build_discovery, components

ROOT = Path(__file__).resolve().parents[2]
HA_PYTHON = Path(os.environ.get("HA_PYTHON", ROOT / ".venv-ha" / "bin" / "python"))
HA_OLD_PYTHON = Path(os.environ.get("HA_OLD_PYTHON", ROOT / ".venv-ha-2023" / "bin" / "python"))
CHECKER = ROOT / "tools" / "ha_check_discovery.py"
BASE = "emotion-agent/lobby-1"
RULES = ("stress", "crowd-anger")
HEALTH_DIAGNOSTICS = ("fps", "frames_dropped", "spool_backlog")


def spec(mode: str, *, commands: bool = True) -> DiscoverySpec:
    return DiscoverySpec("lobby-1", BASE, alert_rules=RULES, sw_version="0.1.0", key_id="K" * 43,
                         mode=mode, commands=commands)  # type: ignore[arg-type]


def ha_check(messages: dict[str, bytes], python: Path = HA_PYTHON) -> dict[str, Any]:
    assert python.exists(), f"{python} is missing: run `make ha-venv` (make test does)"
    lines = "".join(json.dumps({"topic": t, "payload": p.decode()}) + "\n" for t, p in messages.items())
    done = subprocess.run([str(python), str(CHECKER)], input=lines, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == (not report["errors"]), report
    return report


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    return {mode: ha_check(announcements(spec(mode))) for mode in ("device", "entities")}


@pytest.mark.parametrize("mode", ["device", "entities"])
def test_home_assistant_accepts_every_entity_without_a_dropped_key(
    reports: dict[str, dict[str, Any]], mode: str
) -> None:
    report = reports[mode]
    assert report["home_assistant"] == "2024.3.3"
    assert report["errors"] == []
    assert len(report["entities"]) == len(components(spec(mode))) == 17 + len(RULES)


def test_both_modes_announce_the_same_entities_with_the_same_unique_ids(
    reports: dict[str, dict[str, Any]],
) -> None:
    def ids(mode: str) -> list[tuple[str, str]]:
        return sorted((e["platform"], e["unique_id"]) for e in reports[mode]["entities"])

    assert ids("device") == ids("entities")
    assert len({uid for _, uid in ids("device")}) == len(ids("device"))


@pytest.mark.parametrize("mode", ["device", "entities"])
def test_every_entity_gets_qos_1_and_the_device_availability(
    reports: dict[str, dict[str, Any]], mode: str
) -> None:
    """A device-level qos is not passed on by Home Assistant: each entity must carry it."""
    for entity in reports[mode]["entities"]:
        assert entity["qos"] == 1, entity
        assert entity["availability_topic"] == f"{BASE}/status", entity


@pytest.mark.parametrize("mode", ["device", "entities"])
def test_health_diagnostics_expire_so_privacy_mode_shows_no_stale_figures(
    reports: dict[str, dict[str, Any]], mode: str
) -> None:
    expiry = {e["unique_id"]: e["expire_after"] for e in reports[mode]["entities"]}
    for key in HEALTH_DIAGNOSTICS:
        assert expiry[f"emotion_agent_lobby-1_{key}"] == 180


def test_the_checker_reports_a_key_home_assistant_would_drop_and_a_bad_device_block() -> None:
    """The schemas remove unknown keys silently; the checker must not."""
    s = spec("device")
    message = build_discovery(s)
    message["cmps"]["checkpoint"]["expire_after"] = 60  # buttons have no expire_after
    report = ha_check({s.topic: json.dumps(message).encode()})
    assert report["errors"] == [
        f"{s.topic} component checkpoint: keys Home Assistant 2024.3.3 ignores: expire_after"
    ]
    message = build_discovery(s)
    message["dev"]["colour"] = "red"
    report = ha_check({s.topic: json.dumps(message).encode()})
    assert len(report["errors"]) == 1
    assert "extra keys not allowed @ data['device']['colour']" in report["errors"][0]


def test_the_checker_refuses_an_entity_without_its_required_topic() -> None:
    s = spec("entities")
    topic, payload = next((t, p) for t, p in announcements(s).items() if "/switch/" in t)
    config = json.loads(payload)
    del config["command_topic"]
    report = ha_check({topic: json.dumps(config).encode()})
    assert len(report["errors"]) == 1
    assert "required key not provided" in report["errors"][0]
    assert "command_topic" in report["errors"][0]


def test_home_assistant_2023_9_accepts_every_entity_of_entities_mode() -> None:
    report = ha_check(announcements(spec("entities")), HA_OLD_PYTHON)
    assert report["home_assistant"] == "2023.9.3"
    assert report["errors"] == []
    assert len(report["entities"]) == 17 + len(RULES)
    assert all(e["qos"] == 1 and e["availability_topic"] == f"{BASE}/status" for e in report["entities"])


def test_home_assistant_2023_9_refuses_a_device_block_with_a_serial_number() -> None:
    """Why entities mode leaves ``sn`` out: the old device schema refuses the whole entity."""
    s = spec("entities")
    topic, payload = next(iter(announcements(s).items()))
    config = json.loads(payload)
    config["dev"]["sn"] = "K" * 43
    report = ha_check({topic: json.dumps(config).encode()}, HA_OLD_PYTHON)
    assert report["errors"] == [f"{topic}: extra keys not allowed @ data['device']['sn']"]


def test_the_checker_runs_outside_the_agent_venv() -> None:
    """Home Assistant's pins never reach the agent's own environment."""
    done = subprocess.run([sys.executable, "-c", "import homeassistant"], capture_output=True, check=False)
    assert done.returncode != 0


@pytest.mark.parametrize("mode", ["device", "entities"])
def test_with_commands_off_privacy_mode_is_a_read_only_binary_sensor_and_no_entity_sends(mode: str) -> None:
    """Nothing subscribes to a command topic then: a switch or button would do nothing."""
    report = ha_check(announcements(spec(mode, commands=False)))
    assert report["errors"] == []
    platforms = sorted(e["platform"] for e in report["entities"])
    assert "switch" not in platforms
    assert "button" not in platforms
    assert len(report["entities"]) == 17 - 1 + len(RULES)
    assert ("binary_sensor", "emotion_agent_lobby-1_privacy_state") in {
        (e["platform"], e["unique_id"]) for e in report["entities"]
    }


def test_home_assistant_2023_9_accepts_the_read_only_privacy_mode_of_entities_mode() -> None:
    report = ha_check(announcements(spec("entities", commands=False)), HA_OLD_PYTHON)
    assert report["errors"] == []
    assert len(report["entities"]) == 17 - 1 + len(RULES)


def test_a_retired_component_is_a_removal_home_assistant_accepts() -> None:
    """A device message removes a component with ``{"p": <platform>}`` alone (2024.11's
    ``check_unique_id`` skips such an entry; ``discovery.py`` dispatches it as an empty payload)."""
    s = spec("device")
    retired = {"alert_gone": "binary_sensor", "checkpoint_old": "button"}
    report = ha_check(announcements(s, retired))
    assert report["errors"] == []
    assert len(report["entities"]) == 17 + len(RULES)
    assert sorted(r["platform"] for r in report["removed"]) == ["binary_sensor", "button"]
