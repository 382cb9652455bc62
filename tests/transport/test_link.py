"""Connection errors read by people: what failed and which setting to check."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.transport.link import TransportHealth, explain, read_password


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("broker refused the connection: Not authorized", "check mqtt.username, mqtt.password_file"),
        ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
         "not signed by mqtt.tls.ca"),
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
         "set mqtt.tls.cert and key"),
        ("cannot connect to 127.0.0.1:1: ConnectionRefusedError: [Errno 111] Connection refused",
         "check mqtt.host, mqtt.port"),
    ],
)
def test_known_failures_get_a_hint(error: str, hint: str) -> None:
    explained = explain(error)
    assert explained.startswith(f"{error} (")
    assert hint in explained


def test_an_unknown_failure_is_left_as_it_is() -> None:
    assert explain("connection lost: Keep alive timeout") == "connection lost: Keep alive timeout"


def test_the_password_is_the_first_line_of_the_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\nignored\n")
    f.chmod(0o600)
    assert read_password(f) == "s3cret"


def test_a_missing_or_empty_password_file_names_the_setting(tmp_path: Path) -> None:
    missing = r"mqtt.password_file .*/nope: password file not found"
    with pytest.raises(ConfigError, match=missing):
        read_password(tmp_path / "nope")
    (tmp_path / "empty").write_text("")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(ConfigError, match="the file is empty; put the password on line 1"):
        read_password(tmp_path / "empty")


def test_the_health_body_holds_only_integers_strings_and_none() -> None:
    health = TransportHealth(state="connected", protocol="5", last_error=None, backlog=3, spool_bytes=900,
                             oldest_unsent_ms=1_700_000_000_000, dropped={"retention": 2, "size_cap": 1},
                             connects=4, failures=1, commands_accepted=2, commands_rejected=5)
    body = health.to_body()
    assert body["spool_backlog"] == 3
    assert body["spool_dropped"] == 3
    assert all(v is None or type(v) in (int, str) for v in body.values())
