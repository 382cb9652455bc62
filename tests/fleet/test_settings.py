"""The receiver's config (``collect -c fleet.yaml``) is read as the agent's: its errors read alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.fleet.settings import load_fleet_settings


def problems_of(path: Path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_fleet_settings(path)
    return list(info.value.problems)


def test_the_fleet_configs_errors_read_like_the_agents(tmp_path: Path) -> None:
    """They kept pydantic's ``Value error, `` prefix, showed the value twice, named a NATS key
    ``source.nats.stream`` (the union's tag) at the line of ``source``, and gave no line file or
    help; each now reads as the agent's: key (file:line): what is wrong. Title: description."""
    path = tmp_path / "fleet.yaml"
    problems = problems_of(
        path,
        "receiver_id: R1\n"
        "source:\n  kind: nats\n  stream: bad stream\n"
        "http: {port: 99999, colour: blue}\n",
    )
    assert problems == [
        f"receiver_id ({path}:1): 'R1': lower-case letters, digits and dashes, at most 63. "
        "Receiver id: Unique per replica; used in topics.",
        f"source.stream ({path}:4): String should match pattern '^[A-Za-z0-9_-]{{1,32}}$' "
        "(found 'bad stream'). Stream: JetStream stream that holds the device subjects (made if missing).",
        f"private_key ({path}:1): required key is missing. Receiver key: Ed25519 PEM that signs rollups.",
        f"http.port ({path}:5): Input should be less than or equal to 65535 (found 99999). "
        "Port: /metrics, /healthz and the page; 0: off.",
        f"http.colour ({path}:5): unknown key (found 'blue'); remove it or check its spelling",
    ]
