"""The site file (``provision --site``) is read as the agent's config: its errors describe its own
keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.provision.site import load_site

SITE = "device_name: lobby-1\nbroker: {host: b, ca_cert: ca.crt}\n"


def test_an_error_at_a_key_the_agent_config_also_has_is_described_as_the_site_files(
    tmp_path: Path,
) -> None:
    """The help after a problem came from AgentConfig's keys, so ``site`` (a key of both) showed
    the agent config's description, not the site file's."""
    path = tmp_path / "site.yml"
    path.write_text(SITE + "site: EU\n")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert info.value.problems == [
        f"site ({path}:3): Input should be an object (found 'EU'). The agent config's site "
        "section: Jurisdiction, context, purpose, signage, consent: validated by the agent's schema."
    ]

