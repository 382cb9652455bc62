"""The shared purity helper catches what it is for: a module that needs a blocked library."""

from __future__ import annotations

from tests.purity import import_blocked


def test_a_module_that_imports_opencv_fails_with_the_block_named() -> None:
    result = import_blocked(["agent.vision.pipeline"])
    assert not result.ok
    assert "blocked: cv2" in result.stderr


def test_an_extra_name_can_be_blocked() -> None:
    assert import_blocked(["agent.clock"]).ok
    assert not import_blocked(["agent.frame"], also=["numpy"]).ok
