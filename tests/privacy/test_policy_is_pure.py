"""The policy engine is pure logic: it imports with cv2, LiteRT, paho and picamera2 blocked."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys
BLOCKED = ("cv2", "ai_edge_litert", "tflite_runtime", "paho", "picamera2")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import agent.privacy.policy, agent.privacy.schedule, agent.privacy.zones, agent.privacy.retention
import agent.privacy.privacy_mode, agent.privacy.gate, agent.privacy.settings
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("loaded:", loaded)
"""


def test_policy_modules_import_without_hardware_or_network_libraries() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded: []"
