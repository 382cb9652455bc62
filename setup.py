"""Packaging glue that ``pyproject.toml`` alone cannot say: ship the top-level ``models/`` folder.

The vendored models stay in ``models/`` (tools and docs use that path), yet an installed wheel
must carry them. Mapping ``models/`` to the package ``agent._models`` puts them in the wheel as
``agent/_models/*``, where ``agent.vision.manifest.default_models_dir()`` finds them. Everything
else (metadata, package data) is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["agent", "agent.*"]), "agent._models"],
    package_dir={"agent._models": "models"},
)
