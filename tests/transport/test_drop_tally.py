"""``DropTally``: spool drops summed into the audit log, at most one entry a minute, none lost."""

from __future__ import annotations

import threading

import pytest

from agent.clock import FakeClock
from agent.transport.drop_tally import EVERY_S, DropTally, drop_message
from agent.transport.spool_types import DropReport


def test_the_first_drop_is_written_at_once_and_the_next_seconds_are_summed() -> None:
    clock, written = FakeClock(), list[str]()
    tally = DropTally(written.append, clock)
    tally.report(DropReport("size_cap", 1, 600))
    assert written == [drop_message(1, 600, "size_cap")]
    for _ in range(5):
        clock.advance(EVERY_S / 10)
        tally.report(DropReport("size_cap", 2, 1000))
    tally.report(DropReport("retention", 3, 30))
    assert len(written) == 1
    assert tally.pending == 13
    tally.record()  # the loop's turn, half of EVERY_S after the entry: not yet
    assert len(written) == 1
    clock.advance(EVERY_S / 2)
    tally.record()
    assert written[1:] == [drop_message(3, 30, "retention"), drop_message(10, 5000, "size_cap")]
    assert tally.pending == 0


def test_the_stop_writes_what_is_pending_whatever_the_time() -> None:
    clock, written = FakeClock(), list[str]()
    tally = DropTally(written.append, clock)
    tally.report(DropReport("size_cap", 1, 10))
    tally.report(DropReport("refused_by_broker", 2, 20))
    tally.record(force=True)
    assert written == [drop_message(1, 10, "size_cap"), drop_message(2, 20, "refused_by_broker")]
    tally.record(force=True)  # nothing pending: nothing written
    assert len(written) == 2


def test_a_drop_reported_from_inside_the_append_is_summed_not_written() -> None:
    """The audit append makes a checkpoint due, whose message drops another row: that drop must
    neither write an entry of its own (one more checkpoint, without end) nor deadlock."""
    clock, written = FakeClock(), list[str]()
    tally: DropTally

    def append(message: str) -> None:
        written.append(message)
        tally.report(DropReport("size_cap", 1, 700))  # the checkpoint's own drop

    tally = DropTally(append, clock)
    tally.report(DropReport("size_cap", 1, 700))
    assert written == [drop_message(1, 700, "size_cap")]
    assert tally.pending == 1
    clock.advance(EVERY_S)
    tally.record()
    assert len(written) == 2
    assert tally.pending == 1


def test_drops_from_several_threads_are_all_counted() -> None:
    clock, written = FakeClock(), list[str]()
    tally = DropTally(written.append, clock)

    def drop() -> None:
        for _ in range(500):
            tally.report(DropReport("size_cap", 1, 1))

    threads = [threading.Thread(target=drop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.record(force=True)
    assert sum(int(m.split()[0]) for m in written) == 2000
    assert len(written) == 2  # the first drop at once, the other 1,999 at the stop


def test_a_tally_that_could_write_at_every_drop_is_refused() -> None:
    with pytest.raises(ValueError, match="every must be positive"):
        DropTally(lambda _m: None, FakeClock(), every=0)
