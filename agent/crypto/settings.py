"""The ``keys`` config section: where the device's signing key is read from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo

from agent.settings_base import Section, in_config_folder


def _bare_or_in_config_folder(path: Path, info: ValidationInfo) -> Path:
    """A bare name stays bare: it is systemd's credential first, then the file beside the config
    (``agent.crypto.keys.resolve_key_path``); any other relative path is beside the config."""
    return path if len(path.parts) == 1 else in_config_folder(path, info)


KeyPath = Annotated[Path, AfterValidator(_bare_or_in_config_folder)]
"""A private key a config names (the device's; the fleet receiver's and its witness's)."""


class KeysConfig(Section):
    private_key: KeyPath = Field(
        Path("/etc/emotion-agent/device.key"),
        title="Device Ed25519 private key (PEM, mode 0600)",
        description="A bare file name is looked up in $CREDENTIALS_DIRECTORY first (systemd), "
        "then in the config file's folder; any other relative path is read from that folder.",
    )
