"""The ``keys`` config section: where the device's signing key is read from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

from agent.settings_base import Section, in_config_folder


def _dot_slash_is_a_path(value: Any, info: ValidationInfo) -> Any:
    """``./device.key`` is the file beside the config, as written: pathlib drops the ``./``,
    which made it the bare name ``device.key``, looked up as systemd's credential first."""
    if isinstance(value, str) and value.startswith("./") and len(Path(value).parts) == 1:
        return str(in_config_folder(Path(value), info))
    return value


def _bare_or_in_config_folder(path: Path, info: ValidationInfo) -> Path:
    """A bare name stays bare: it is systemd's credential first, then the file beside the config
    (``agent.crypto.keys.resolve_key_path``); any other relative path is beside the config."""
    return path if len(path.parts) == 1 else in_config_folder(path, info)


KeyPath = Annotated[Path, BeforeValidator(_dot_slash_is_a_path), AfterValidator(_bare_or_in_config_folder)]
"""A private key a config names (the device's; the fleet receiver's and its witness's)."""


class KeysConfig(Section):
    private_key: KeyPath = Field(
        Path("/etc/emotion-agent/device.key"),
        title="Device Ed25519 private key (PEM, mode 0600)",
        description="A bare file name is looked up in $CREDENTIALS_DIRECTORY first (systemd), "
        "then in the config file's folder; any other relative path (./device.key too) is read "
        "from that folder.",
    )
