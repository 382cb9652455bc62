"""apt's picamera2 under a venv's numpy 2: one line saying what to do, not numpy's traceback.

The mechanism is reproduced with a real Debian C extension: python3-bottleneck, built against
Bookworm's numpy 1.24 like apt's simplejpeg, imported from /usr/lib/python3/dist-packages by a
stand-in ``picamera2`` package while the project's venv has numpy 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent.camera.picam import numpy_abi_mismatch

DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def test_the_venv_numpy_is_2_and_debian_bottleneck_is_built_for_1() -> None:
    """The precondition of the reproduction (tools/system-deps.sh installs python3-bottleneck)."""
    assert int(np.__version__.split(".")[0]) >= 2
    assert (Path(DIST_PACKAGES) / "bottleneck").is_dir()


def test_a_debian_extension_fails_to_load_under_the_venv_numpy_2(tmp_path: Path) -> None:
    code = f"import sys; sys.path.append({DIST_PACKAGES!r}); import bottleneck"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "AttributeError: _ARRAY_API not found" in done.stderr
    assert "compiled using NumPy 1.x cannot be run in" in done.stderr


def test_picamera2_failing_on_the_numpy_abi_is_one_line_with_the_fix(tmp_path: Path) -> None:
    fake = tmp_path / "picamera2"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"import sys\nsys.path.append({DIST_PACKAGES!r})  # where apt's picamera2 lives\n"
        "import bottleneck  # a C extension built against numpy 1.24, as simplejpeg is\n"
    )
    exe = Path(sys.executable).with_name("emotion-agent")
    done = subprocess.run(
        [str(exe), "analyze", "picamera2", "--max-frames", "1"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") <= 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "emotion-agent: error: picamera2 is installed but cannot load: apt's C extensions were "
        f"built for numpy 1.x and this venv has numpy {np.__version__}"
    )
    assert "constraints.txt 'numpy<2'" in done.stderr


def test_an_attribute_error_from_simplejpeg_is_recognised_too() -> None:
    """picamera2 #1088: simplejpeg raises the AttributeError itself, not an ImportError."""
    fix = numpy_abi_mismatch(AttributeError("_ARRAY_API not found"), "2.1.0")
    assert fix is not None
    assert "numpy 2.1.0 (AttributeError: _ARRAY_API not found)" in fix


def test_an_unrelated_import_error_is_not_called_an_abi_problem() -> None:
    assert numpy_abi_mismatch(ImportError("No module named 'libcamera'"), "2.1.0") is None
