"""The receiver's broker files are read as the agent's (``agent.preflight``, ``read_password``):
each refusal names its ``source.`` key and the file. The password was ``read_text``: a FIFO
hung, /dev/zero ran out of memory, non-UTF-8 text was a traceback and an empty file "could not
be read"; a missing or broken TLS file was paho's bare OSError or SSL error, naming no key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.fleet.mqtt_inbox import MqttInbox
from agent.fleet.settings import BrokerTlsSettings, MqttSourceSettings


def _inbox(**fields: object) -> MqttInbox:
    return MqttInbox(MqttSourceSettings.model_validate({"kind": "mqtt", **fields}), "rx-1")


@pytest.mark.parametrize(
    ("write", "said"),
    [
        (lambda p: p.write_bytes(b"\xff\xfe secret\n"), "the password is not UTF-8 text"),
        (lambda p: p.write_text(""), "the file is empty; put the password on line 1"),
        (os.mkfifo, "the password file must be a regular file, not a FIFO (named pipe)"),
    ],
)
def test_a_password_file_that_cannot_be_used_names_the_key(tmp_path: Path, write: object, said: str) -> None:
    path = tmp_path / "password"
    write(path)  # type: ignore[operator]
    if path.is_file():
        path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        _inbox(username="rx", password_file=path)
    assert str(info.value) == f"source.password_file {path}: {said}"


def test_a_tls_file_that_cannot_be_used_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError) as info:
        _inbox(tls=BrokerTlsSettings(ca=missing))
    assert str(info.value).startswith(f"source.tls.ca {missing}: CA certificate not found")
    missing.write_text("garbage\n")
    with pytest.raises(ConfigError) as info:
        _inbox(tls=BrokerTlsSettings(ca=missing))
    assert str(info.value) == f"source.tls.ca {missing}: not a PEM file (no -----BEGIN line)"
