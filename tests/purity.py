"""One helper for the "imports with the hardware libraries blocked" tests.

``import_blocked`` imports modules in a fresh interpreter (so the blocking cannot disturb other
tests) in which cv2, LiteRT, picamera2 and paho, plus any ``also`` names, cannot be imported:
a finder at the head of ``sys.meta_path`` refuses them and all their submodules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

HARDWARE = ("cv2", "ai_edge_litert", "tflite_runtime", "picamera2", "paho")

TEMPLATE = """
import json, sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
{before}
import {modules}
{then}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
"""


@dataclass(frozen=True)
class Imported:
    returncode: int
    stderr: str
    loaded: list[str] | None
    """Blocked modules found in ``sys.modules`` afterwards (None when the run failed)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.loaded == []


def import_blocked(
    modules: Sequence[str], *, also: Sequence[str] = (), before: str = "", then: str = ""
) -> Imported:
    """Import ``modules`` with the hardware libraries (and ``also``) blocked; ``before`` runs
    first (after the block is in place), ``then`` after the imports (asserts raise)."""
    code = TEMPLATE.format(
        blocked=(*HARDWARE, *also), before=before, modules=", ".join(modules), then=then
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    lines = proc.stdout.strip().splitlines()
    loaded = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    return Imported(proc.returncode, proc.stderr, loaded)
