"""The policy engine is pure logic: it imports with cv2, LiteRT, paho and picamera2 blocked."""

from __future__ import annotations

from tests.purity import import_blocked


def test_policy_modules_import_without_hardware_or_network_libraries() -> None:
    modules = [f"agent.privacy.{m}" for m in
               ("policy", "schedule", "zones", "retention", "privacy_mode", "gate", "settings")]
    result = import_blocked(modules)
    assert result.ok, result.stderr
