"""The wheel carries the models: built offline from a clean copy of the tree, installed into a
fresh venv, the installed agent finds them without any config and every hash matches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.vision import manifest
from agent.vision.manifest import MODELS_ENV, default_models_dir, load_manifest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "agent", "models")

# Runs inside the installed venv: where the models are, and each manifest file verified.
PROBE = """
import json, sys
from agent.vision.manifest import default_models_dir, load_manifest, model_spec
d = default_models_dir()
checked = []
for name, entry in load_manifest(d)["models"].items():
    for precision in ["float", *sorted(entry.get("variants") or {})]:
        spec = model_spec(d, name, precision=precision)
        checked.append([name, precision, str(spec.path)])
json.dump({"dir": str(d), "checked": checked}, sys.stdout)
"""


def manifest_files(models: Path) -> dict[str, str]:
    """file name -> sha256 of every model the manifest names (float, variants, Edge TPU)."""
    files = {}
    for entry in load_manifest(models)["models"].values():
        for chosen in [entry, *(entry.get("variants") or {}).values()]:
            files[chosen["file"]] = chosen["sha256"]
            edgetpu = chosen.get("edgetpu") or {}
            if "file" in edgetpu:
                files[edgetpu["file"]] = edgetpu["sha256"]
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a clean copy of the tree (no stale build/), built offline with this venv's setuptools."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(src)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("emotion_agent-*.whl")
    return found


def test_the_wheel_holds_every_model_the_manifest_names_with_its_hash(wheel: Path) -> None:
    expected = manifest_files(ROOT / "models")
    assert len(expected) >= 5
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        packaged = {n.removeprefix("agent/_models/") for n in names if n.startswith("agent/_models/")}
        assert packaged == {*expected, "manifest.json"}
        for file, sha in expected.items():
            assert hashlib.sha256(whl.read(f"agent/_models/{file}")).hexdigest() == sha, file
        assert whl.read("agent/_models/manifest.json") == (ROOT / "models/manifest.json").read_bytes()
        # every package of the tree made it in (setup.py lists them, not pyproject.toml)
        for init in (ROOT / "agent").rglob("__init__.py"):
            assert str(init.relative_to(ROOT)) in names


def test_an_installed_wheel_finds_its_models_without_config(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, check=False,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if k not in (MODELS_ENV, "PYTHONPATH")}
    # cwd is not the checkout, so only the installed package can be imported
    done = subprocess.run([str(py), "-c", PROBE], capture_output=True, text=True, env=env,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert found["dir"] == str(Path(purelib) / "agent" / "_models")
    assert (Path(found["dir"]) / "manifest.json").is_file()
    assert {(name, precision) for name, precision, _ in found["checked"]} >= {
        ("face_detection_short_range", "float"),
        ("face_detection_full_range", "float"),
        ("face_detection_full_range", "int8"),
        ("emotion", "float"),
        ("emotion", "int8"),
    }
    assert all(path.startswith(found["dir"]) for _, _, path in found["checked"])


def test_the_environment_variable_wins_over_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "elsewhere"))
    assert default_models_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv(MODELS_ENV, "")
    assert default_models_dir() == ROOT / "models"


def test_a_models_folder_without_a_manifest_is_not_taken_for_a_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The installed-venv test above shows the real fallback (no checkout at all); this is the
    other way to miss: a ``models/`` beside the package that holds no manifest."""
    stray, installed = tmp_path / "models", tmp_path / "_models"
    stray.mkdir()
    (stray / "emotion_fer.tflite").write_bytes(b"not a checkout's models")
    shutil.copytree(ROOT / "models", installed)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    monkeypatch.setattr(manifest, "checkout_models_dir", lambda: stray)
    monkeypatch.setattr(manifest, "installed_models_dir", lambda: installed)
    assert default_models_dir() == installed
    assert manifest.model_spec(default_models_dir(), "emotion").path == installed / "emotion_fer.tflite"
