"""A retained alert state does not outlive its rule when the rule is removed across a restart
(found by review).

A reload that removes an alert rule empties its retained ``alert/<rule>`` (``update_discovery``);
at the first connect of a run only the rules of *this* config were cleared, so a rule removed
while the agent was stopped (config edited, service restarted) kept its last retained state
(say ``raised``) on the broker for ever. The rules announced are kept in ``state_dir`` with the
discovery record, and the next run clears those too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.outputs.base import Message
from agent.transport.discovery import DiscoverySpec
from tests.mosquitto import Broker
from tests.transport.test_discovery_modes import (  # noqa: F401 - fixtures
    BASE,
    DEVICE,
    broker,
    pki,
    retained,
    started,
)


@pytest.mark.slow
def test_a_rule_removed_across_a_restart_leaves_no_retained_alert_state(
    broker: Broker, tmp_path: Path  # noqa: F811
) -> None:
    two = DiscoverySpec(DEVICE, BASE, alert_rules=("stress", "crowd"))
    one = DiscoverySpec(DEVICE, BASE, alert_rules=("stress",))
    state = tmp_path / "state"
    out = started(broker, state, "entities", two)
    try:
        out.send(Message(f"{BASE}/alert/crowd", b'{"state":"raised"}', retain=True))
        out.send(Message(f"{BASE}/alert/stress", b'{"state":"cleared"}', retain=True))
    finally:
        out.stop()
    assert f"{BASE}/alert/crowd" in retained(broker, f"{BASE}/alert/#"), "run 1 left its state"
    started(broker, state, "entities", one).stop()  # `crowd` removed from the config, restarted
    left = retained(broker, f"{BASE}/alert/#")
    assert f"{BASE}/alert/crowd" not in left, (
        f"the removed rule's state is still retained after the restart: {left[f'{BASE}/alert/crowd']!r}"
    )
