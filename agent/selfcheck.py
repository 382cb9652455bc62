"""``python -m agent.selfcheck``: can this installed venv run the agent? Used before a venv goes live.

tools/install and the first-boot setup build a new venv beside the running one and switch to it
only if this passes, so a broken upgrade (a dependency that does not load, a numpy that apt's
C extensions refuse, altered models) leaves the previous venv in service. It loads the real
dependencies and runs every vendored float model once on the CPU; if apt's picamera2 is visible
it is imported too, since that is where a numpy ABI mismatch shows. Exit 0 with one summary
line, or 1 with one line per problem.
"""

# ruff: noqa: PLC0415 - each check imports what it tests, so a missing module is reported, not raised

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable


def _versions() -> str:
    import cv2
    import numpy as np

    from agent import __version__
    from agent.vision.runtime import interpreter_module

    runtime = interpreter_module().__name__.split(".")[0]
    return f"emotion-agent {__version__}, numpy {np.__version__}, OpenCV {cv2.__version__}, {runtime}"


def _models() -> str:
    import numpy as np

    from agent.vision.manifest import default_models_dir, load_manifest, model_spec
    from agent.vision.runtime import BACKENDS

    folder = default_models_dir()
    names = sorted(load_manifest(folder)["models"])
    for name in names:
        spec = model_spec(folder, name)
        model = BACKENDS["cpu"].open(spec, 1)
        try:
            model.run(np.zeros(spec.input_shape, dtype=np.float32))
        finally:
            model.close()
    return f"{len(names)} models run ({folder})"


def _picamera2() -> str:
    if importlib.util.find_spec("picamera2") is None:
        return "picamera2 not installed (apt's python3-picamera2 is needed only for picamera2 sources)"
    from agent.camera.picam import import_picamera2

    import_picamera2()
    return "picamera2 imports"


CHECKS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("dependencies", _versions),
    ("models", _models),
    ("picamera2", _picamera2),
)


def main() -> int:
    said, failed = [], 0
    for name, check in CHECKS:
        try:
            said.append(check())
        except Exception as exc:  # every failure is reported, one line each
            failed += 1
            print(f"self-check: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if failed:
        return 1
    print("self-check ok: " + "; ".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
