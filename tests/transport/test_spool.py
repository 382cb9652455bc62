"""The offline spool: durable before send, ordered, bounded, and every drop reported."""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.clock import Clock, FakeClock
from agent.errors import PayloadError, TransportError
from agent.transport.spool import Spool
from agent.transport.spool_file import CACHE_KIB
from agent.transport.spool_types import DropReport


def make(tmp_path: Path, clock: Clock, **kw: object) -> tuple[Spool, list[DropReport]]:
    drops: list[DropReport] = []
    args: dict[str, object] = {"max_bytes": 1_000_000, "max_age_seconds": 7 * 86400}
    args.update(kw)
    spool = Spool(tmp_path / "spool.sqlite3", clock, on_drop=drops.append, **args)  # type: ignore[arg-type]
    return spool, drops


def test_messages_come_back_in_order_until_acknowledged(tmp_path: Path, clock: FakeClock) -> None:
    spool, _ = make(tmp_path, clock)
    ids = [spool.put("t/stats", f"m{i}".encode()) for i in range(5)]
    assert [i.payload for i in spool.pending()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert spool.ack(ids[1]) is True
    assert spool.ack(ids[1]) is False
    assert [i.id for i in spool.pending()] == [ids[0], ids[2], ids[3], ids[4]]
    assert [i.id for i in spool.pending(after_id=ids[2])] == [ids[3], ids[4]]
    assert spool.stats().backlog == 4


def test_the_database_uses_wal_and_full_sync(tmp_path: Path, clock: FakeClock) -> None:
    spool, _ = make(tmp_path, clock)
    spool.put("t/a", b"x")
    spool.close()
    db = sqlite3.connect(tmp_path / "spool.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def sqlite_memory_used() -> int | None:
    """Bytes SQLite has allocated in this process (``sqlite3_memory_used``), None if not reachable."""
    import _sqlite3  # noqa: PLC0415 - the extension module, whose library holds the counter

    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    return int(used())


def test_a_large_spool_keeps_sqlites_page_cache_small(tmp_path: Path, clock: FakeClock) -> None:
    """A broker away for hours: 5 MB of rows. A put reads every page (the size cap sums the
    rows), and SQLite's default cache (2000 KiB) would keep 2 MB of them in the process."""
    spool, _ = make(tmp_path, clock, max_bytes=64 << 20)
    assert spool._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
    spool.close()
    db = sqlite3.connect(tmp_path / "spool.sqlite3")
    now_ms = int(clock.time() * 1000)
    with db:
        db.executemany(
            "INSERT INTO spool (topic, payload, retain, created_ms, mono_ms) VALUES (?, ?, 0, ?, NULL)",
            [("t/stats", os.urandom(600), now_ms) for _ in range(8000)],
        )
    db.close()
    before = sqlite_memory_used()
    if before is None:
        pytest.skip("sqlite3_memory_used is not reachable through ctypes here")
    spool, drops = make(tmp_path, clock, max_bytes=64 << 20)
    spool.put("t/stats", b"one more")
    assert len(spool.pending(limit=100)) == 100
    used = sqlite_memory_used()
    assert used is not None
    assert drops == []
    assert spool.stats().backlog == 8001
    assert used - before < (CACHE_KIB + 300) * 1024  # the cache, the schema, statements
    spool.close()


def test_messages_survive_a_reopen_with_their_spool_time(tmp_path: Path, clock: FakeClock) -> None:
    spool, _ = make(tmp_path, clock)
    spool.put("t/stats", b"first", retain=True)
    spool.close()
    clock.advance(3600)
    again, _ = make(tmp_path, clock)
    (item,) = again.pending()
    assert (item.topic, item.payload, item.retain) == ("t/stats", b"first", True)
    assert item.created_ms == 1_700_000_000_000


def test_messages_older_than_retention_are_dropped_and_reported(tmp_path: Path, clock: FakeClock) -> None:
    spool, drops = make(tmp_path, clock, max_age_seconds=86400)
    spool.put("t/stats", b"old-1")
    spool.put("t/alert", b"old-2")
    clock.advance(86400 + 1)
    spool.put("t/stats", b"new")
    assert [i.payload for i in spool.pending()] == [b"new"]
    assert len(drops) == 1
    assert drops[0].to_body() == {
        "reason": "retention",
        "count": 2,
        "bytes": 10,
        "topics": {"t/alert": 1, "t/stats": 1},
        "oldest_ms": 1_700_000_000_000,
        "newest_ms": 1_700_000_000_000,
    }
    assert spool.stats().dropped == {"retention": 2}


class SteppedClock:
    """A Raspberry Pi's clock: no real-time clock, so the wall time starts at fake-hwclock's last
    saved time (or 1970) and NTP steps it later; monotonic time only runs."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 0.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_a_clock_stepped_forward_by_ntp_does_not_age_out_the_rows_spooled_before_it(tmp_path: Path) -> None:
    clock = SteppedClock(1_700_000_000.0)  # fake-hwclock: the time of the last shutdown
    spool, drops = make(tmp_path, clock, max_age_seconds=7 * 86400)
    for i in range(3):
        spool.put("t/stats", b"window-%d" % i)  # broker or network not up yet
        clock.sleep(60)
    clock.wall += 30 * 86400  # NTP: the device had been off for a month
    spool.put("t/stats", b"window-3")
    assert drops == []
    assert len(spool.pending()) == 4
    clock.sleep(7 * 86400 - 150)  # the first row is now 7 days and 30 s old, the second is not
    spool.enforce_limits()
    assert [i.payload for i in spool.pending()] == [b"window-1", b"window-2", b"window-3"]
    assert [(d.reason, d.count) for d in drops] == [("retention", 1)]


def test_rows_of_an_earlier_run_age_by_the_wall_clock(tmp_path: Path) -> None:
    """Monotonic time does not carry over a restart: the rows of an earlier run keep the wall
    clock rule, and only the rows written since the spool was opened age by monotonic time."""
    clock = SteppedClock(1_700_000_000.0)
    spool, _ = make(tmp_path, clock, max_age_seconds=86400)
    spool.put("t/stats", b"earlier run")
    spool.close()
    clock.wall += 86400 + 1  # wall time that passed while the agent was stopped
    again, drops = make(tmp_path, clock, max_age_seconds=86400)
    again.put("t/stats", b"this run")
    assert [i.payload for i in again.pending()] == [b"this run"]
    assert [(d.reason, d.count, d.oldest_ms) for d in drops] == [("retention", 1, 1_700_000_000_000)]


def test_a_spool_written_before_monotonic_ages_keeps_its_rows_and_their_wall_clock_rule(
    tmp_path: Path, clock: FakeClock
) -> None:
    with sqlite3.connect(tmp_path / "spool.sqlite3") as db:  # the table as earlier versions made it
        db.execute(
            "CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO spool (topic, payload, retain, created_ms) VALUES ('t/stats', x'6f6c64', 0, ?)",
            (int(clock.time() * 1000),),
        )
    db.close()
    clock.advance(3600)
    spool, drops = make(tmp_path, clock, max_age_seconds=86400)
    spool.put("t/stats", b"new")
    assert [i.payload for i in spool.pending()] == [b"old", b"new"]
    clock.advance(86400 - 1800)  # the old row is past a day by the wall clock, the new one is not
    spool.enforce_limits()
    assert [i.payload for i in spool.pending()] == [b"new"]
    assert [(d.reason, d.count) for d in drops] == [("retention", 1)]


def test_the_size_cap_drops_the_oldest_first(tmp_path: Path, clock: FakeClock) -> None:
    spool, drops = make(tmp_path, clock, max_bytes=250)
    for i in range(5):
        spool.put("t/stats", bytes([65 + i]) * 100)
        clock.advance(1)
    remaining = [i.payload[:1] for i in spool.pending()]
    assert remaining == [b"D", b"E"]
    assert sum(d.count for d in drops) == 3
    assert {d.reason for d in drops} == {"size_cap"}
    assert spool.stats().bytes <= 250


def test_a_message_the_broker_refused_is_dropped_and_counted(tmp_path: Path, clock: FakeClock) -> None:
    spool, drops = make(tmp_path, clock)
    row = spool.put("t/forbidden", b"x")
    spool.drop(row, "refused_by_broker")
    assert spool.pending() == []
    assert drops[0].reason == "refused_by_broker"
    assert drops[0].topics == {"t/forbidden": 1}


def test_a_failing_drop_callback_does_not_lose_the_count(tmp_path: Path, clock: FakeClock) -> None:
    def broken(_report: DropReport) -> None:
        raise RuntimeError("audit log down")

    spool = Spool(tmp_path / "s.sqlite3", clock, max_bytes=10, max_age_seconds=60, on_drop=broken)
    spool.put("t", b"0123456789AB")
    assert spool.stats().dropped == {"size_cap": 1}


def test_an_unwritable_state_dir_is_a_clear_transport_error(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TransportError, match="cannot open the offline spool") as exc:
        Spool(blocker / "spool.sqlite3", clock, max_bytes=10, max_age_seconds=60)
    assert "state_dir" in str(exc.value)


WRITER = """
import os, sys
from pathlib import Path
from agent.clock import SystemClock
from agent.transport.spool import Spool
s = Spool(Path(sys.argv[1]), SystemClock(), max_bytes=10**7, max_age_seconds=86400)
for i in range(50):
    s.put("t/stats", b"msg-%d" % i)
print("written", flush=True)
sys.stdin.read()
"""


def test_rows_written_survive_kill_9_of_the_writer(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "spool.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.stdout.close()
    spool, _ = make(tmp_path, FakeClock(start=clock.time()))
    assert [i.payload for i in spool.pending(limit=100)] == [b"msg-%d" % i for i in range(50)]


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ("CREATE TABLE spool (x)", "its spool table has the columns (x), not (id, topic, payload, retain, "
         "created_ms, mono_ms)"),
        ("CREATE TABLE quarantine (id, note)", "its quarantine table has the columns (id, note)"),
    ],
)
def test_a_spool_file_of_another_schema_is_refused_at_open(
    tmp_path: Path, clock: FakeClock, schema: str, said: str
) -> None:
    """Every put failed, then stats() at close raised OperationalError (no such column): a
    traceback, and the messages the publisher held in memory were lost."""
    path = tmp_path / "spool.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(schema)
    db.close()
    with pytest.raises(PayloadError) as err:
        make(tmp_path, clock)
    assert str(err.value).startswith(f"{path}: not an offline spool this agent wrote ({said}")
    assert f"mv {path} {path}.bad" in str(err.value)
    assert err.value.exit_code == 2


def test_a_file_that_is_no_database_is_refused_naming_it(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "spool.sqlite3").write_bytes(b"not SQLite at all " * 100)
    said = r"spool\.sqlite3: not an offline spool this agent wrote \(file is not a database\)"
    with pytest.raises(PayloadError, match=said):
        make(tmp_path, clock)


def test_stats_give_the_last_figures_when_the_database_fails(tmp_path: Path, clock: FakeClock) -> None:
    spool, _ = make(tmp_path, clock)
    spool.put("t/stats", b"x")
    assert spool.stats().backlog == 1
    with sqlite3.connect(tmp_path / "spool.sqlite3") as db:
        db.execute("ALTER TABLE spool RENAME TO gone")
    db.close()
    assert spool.stats().backlog == 1  # OperationalError (no such table) was raised, also by close()
    spool.close()


def test_close_waits_for_a_drop_report_in_flight(tmp_path: Path, clock: FakeClock) -> None:
    """A drop is reported once its rows are deleted, outside the database's lock, from whichever
    thread dropped them. Was: ``close`` returned while the MQTT sender thread (past its share of
    the stop) was still reporting one, and the service then closed the audit log: the report found
    it closed, the rows were gone and recorded nowhere. Now ``close`` waits for the report; after
    it no drop is reported (one begun later fails on the closed database and keeps its rows)."""
    entered, release = threading.Event(), threading.Event()
    reports: list[DropReport] = []

    def slow(report: DropReport) -> None:  # an audit entry written to a busy SD card
        entered.set()
        release.wait(10)
        reports.append(report)

    spool = Spool(tmp_path / "s.sqlite3", clock, max_bytes=10**6, max_age_seconds=60, on_drop=slow)
    row = spool.put("t/forbidden", b"x")
    dropper = threading.Thread(target=spool.drop, args=(row, "refused_by_broker"))
    dropper.start()
    assert entered.wait(5)
    closer = threading.Thread(target=spool.close)
    closer.start()
    closer.join(0.3)
    closed_early = not closer.is_alive()
    release.set()
    closer.join(5)
    dropper.join(5)
    assert not closed_early, "close returned while a drop was still being reported"
    assert [(r.reason, r.count) for r in reports] == [("refused_by_broker", 1)]
