"""Floods of commands coalesce into at most one change per interval; duplicates and replays
are ignored (issue 18 item 5)."""

from __future__ import annotations

from agent.clock import FakeClock
from agent.transport.command_gate import CommandGate, GateSettings
from agent.transport.commands import Command

ON, OFF = Command("privacy_mode", on=True), Command("privacy_mode", on=False)
PRESS = Command("checkpoint")


def test_200_checkpoint_presses_in_10_s_make_one_checkpoint_and_one_more_a_minute_later() -> None:
    clock = FakeClock()
    gate = CommandGate(clock)
    taken = []
    for _ in range(200):
        gate.offer(PRESS)
        taken += gate.take()
        clock.advance(0.05)
    assert taken == [PRESS]
    clock.advance(60)
    assert gate.take() == [PRESS]  # the presses after the first, coalesced into one
    assert gate.take() == []
    assert gate.counts["queued"] + gate.counts["coalesced"] == 200


def test_200_privacy_toggles_apply_at_most_one_change_per_interval_and_the_last_wins() -> None:
    clock = FakeClock()
    gate = CommandGate(clock, GateSettings(privacy_min_seconds=2.0))
    applied = []
    for i in range(200):
        gate.offer(ON if i % 2 == 0 else OFF)
        applied += gate.take()
        clock.advance(0.05)  # 10 s of toggles
    clock.advance(2)
    applied += gate.take()
    assert len(applied) <= 6  # 10 s / 2 s, plus the last
    assert applied[-1] == OFF  # the final state asked for is the one in force
    for _ in range(10):
        clock.advance(2)
        assert gate.take() == []


def test_a_privacy_command_for_the_state_in_force_is_a_duplicate() -> None:
    gate = CommandGate(FakeClock())
    assert gate.offer(OFF) == "duplicate"  # the mqtt source starts off
    assert gate.offer(ON) == "queued"
    assert gate.offer(ON) == "duplicate"
    assert gate.take() == [ON]
    assert gate.offer(ON) == "duplicate"


def test_a_signed_command_replayed_or_stale_is_ignored() -> None:
    clock = FakeClock()
    gate = CommandGate(clock, GateSettings(replay_window_seconds=60))
    now = int(clock.time() * 1000)
    gate.offer(ON)
    gate.take()
    clock.advance(5)
    # signed just after the plain ON (one signed before it is stale: the test below)
    signed_off = Command("privacy_mode", on=False, ts_ms=now + 1, nonce="n" * 16)
    assert gate.offer(signed_off) == "queued"
    assert gate.take() == [signed_off]
    gate.offer(ON)
    clock.advance(5)
    gate.take()
    assert gate.offer(signed_off) == "replayed"  # the same signed OFF sent again
    old = Command("privacy_mode", on=False, ts_ms=now - 61_000, nonce="m" * 16)
    assert gate.offer(old) == "stale"
    assert gate.take() == []


def test_duplicates_are_judged_against_the_state_the_service_says_is_in_force() -> None:
    """An ON handed out but not applied (the policy ignores the switch), or released by a
    reload, is not in force: the next ON is queued, not dropped as a duplicate."""
    gate = CommandGate(FakeClock())
    assert gate.offer(ON) == "queued"
    assert gate.take() == [ON]
    gate.in_force(False)
    assert gate.offer(ON) == "queued"


def test_a_signed_off_signed_before_the_last_plain_on_is_stale() -> None:
    """A signed OFF the device missed while offline, captured on the broker and replayed after
    the operator closed the camera again with a plain ON, is refused: its nonce was never seen
    and it is inside the replay window, but it is older than that ON (found by review)."""
    clock = FakeClock()
    gate = CommandGate(clock, GateSettings(replay_window_seconds=60))
    missed = Command("privacy_mode", on=False, ts_ms=int(clock.time() * 1000), nonce="n" * 16)
    clock.advance(5)
    assert gate.offer(ON) == "queued"
    assert gate.take() == [ON]
    clock.advance(5)
    assert gate.offer(missed) == "stale"
    newer = Command("privacy_mode", on=False, ts_ms=int(clock.time() * 1000), nonce="m" * 16)
    assert gate.offer(newer) == "queued"  # signed after the ON: the operator's own OFF


def test_signed_commands_count_only_in_the_order_they_were_signed() -> None:
    clock = FakeClock()
    gate = CommandGate(clock, GateSettings(replay_window_seconds=60))
    now = int(clock.time() * 1000)
    signed_on = Command("privacy_mode", on=True, ts_ms=now, nonce="a" * 16)
    assert gate.offer(signed_on) == "queued"
    assert gate.take() == [signed_on]
    earlier_off = Command("privacy_mode", on=False, ts_ms=now - 1000, nonce="b" * 16)
    assert gate.offer(earlier_off) == "stale"
    assert gate.signed_after_ms == now


def test_the_order_resumed_from_the_last_run_refuses_what_that_run_accepted() -> None:
    """The nonces are gone after a restart; the order the service saved is not. A clock stepped
    back past it (more than the window) would refuse every command, so the order is dropped."""
    clock = FakeClock()
    now = int(clock.time() * 1000)
    gate = CommandGate(clock, GateSettings(replay_window_seconds=60))
    gate.resume_order(now)
    assert gate.offer(Command("privacy_mode", on=False, ts_ms=now, nonce="c" * 16)) == "stale"
    stepped = CommandGate(clock, GateSettings(replay_window_seconds=60))
    stepped.resume_order(now + 3_600_000)  # saved while the clock was an hour ahead
    assert stepped.offer(Command("privacy_mode", on=False, ts_ms=now, nonce="d" * 16)) == "duplicate"
    assert stepped.signed_after_ms == now
