"""The audit package is pure logic: it imports with camera, model and MQTT modules blocked."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
for name in ("cv2", "ai_edge_litert", "tflite_runtime", "picamera2", "paho", "paho.mqtt", "numpy"):
    sys.modules[name] = None  # any import of them raises ImportError
import agent.audit, agent.audit.log, agent.audit.verify, agent.audit.report, agent.commands.audit_cmds
print("ok")
"""


def test_audit_modules_import_without_cv2_litert_picamera2_paho_or_numpy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout == "ok\n", done.stderr
