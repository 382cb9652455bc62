"""The ``keys`` config section: where the device's signing key is read from."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.settings_base import Section


class KeysConfig(Section):
    private_key: Path = Field(
        Path("/etc/emotion-agent/device.key"),
        title="Device Ed25519 private key (PEM, mode 0600)",
        description="A bare file name is looked up in $CREDENTIALS_DIRECTORY first (systemd), "
        "then in the config file's folder.",
    )
