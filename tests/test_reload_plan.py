"""Which reloads close the open window and which reopen the source (issue 18 item 2)."""

from __future__ import annotations

from agent.reload_plan import ReloadPlan, plan_reload


def test_an_alert_rule_change_closes_nothing_and_reopens_nothing() -> None:
    assert plan_reload(["analytics.alerts"], live=False) == ReloadPlan(False, False, False, False)
    assert plan_reload(["retention.audit_days", "policy.schedule"], live=True) == ReloadPlan(
        False, False, False, False
    )


def test_k_closes_the_window_only() -> None:
    assert plan_reload(["analytics.min_people"], live=False) == ReloadPlan(True, False, False, False)


def test_fps_on_a_file_is_retuned_not_reopened() -> None:
    assert plan_reload(["camera.fps"], live=False) == ReloadPlan(True, False, False, True)


def test_fps_on_a_camera_reopens_it_and_a_new_file_is_opened() -> None:
    assert plan_reload(["camera.fps"], live=True).reopen_source
    assert plan_reload(["camera.source"], live=False).reopen_source


def test_a_zone_or_vision_change_closes_the_window_and_vision_reloads_the_models() -> None:
    assert plan_reload(["policy.zones"], live=True).close_window
    plan = plan_reload(["vision.detector"], live=True)
    assert plan.close_window
    assert plan.new_pipeline


def test_a_new_detector_reopens_a_camera_for_its_lores_size_and_retunes_a_file() -> None:
    """The detector's input side sizes picamera2's lores stream (SourceOptions.detector_side)."""
    assert plan_reload(["vision.detector"], live=True) == ReloadPlan(True, True, True, False)
    assert plan_reload(["vision.models_dir"], live=True).reopen_source
    assert plan_reload(["vision.detector"], live=False) == ReloadPlan(True, True, False, True)
    assert plan_reload(["vision.quality.min_face_px"], live=True) == ReloadPlan(True, True, False, False)
