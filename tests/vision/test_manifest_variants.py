"""Explicit ``precision: int8`` on a model whose manifest entry has no usable int8
variant must say so clearly -- not claim in the same breath that the model has one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.vision.manifest import default_models_dir, model_spec
from agent.vision.precision import pick_precisions


def test_int8_on_a_null_variant_does_not_list_int8_as_present(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    path = models / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["models"]["emotion"]["variants"] = {"int8": None}  # no int8 variant ...
    path.write_text(json.dumps(manifest))
    # ... and auto agrees there is none:
    assert pick_precisions(models, ["emotion"], "auto", 1) == ["float"]
    with pytest.raises(ModelError) as err:
        model_spec(models, "emotion", precision="int8")
    message = str(err.value)
    assert "has no int8 variant" in message
    assert "(it has: float)" in message, message  # found: "(it has: float, int8)"
