"""The audit package is pure logic: it imports with camera, model and MQTT modules blocked."""

from __future__ import annotations

from tests.purity import import_blocked


def test_audit_modules_import_without_cv2_litert_picamera2_paho_or_numpy() -> None:
    modules = ["agent.audit", "agent.audit.log", "agent.audit.verify", "agent.audit.report",
               "agent.commands.audit_cmds"]
    result = import_blocked(modules, also=["numpy"])
    assert result.ok, result.stderr
