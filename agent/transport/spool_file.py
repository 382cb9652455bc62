"""The spool's SQLite file: its schema and settings, the check that it is the agent's, its rows.

The file lives in ``state_dir``, where anything could have left a database of its own or
written rows of the wrong types: a file that is not the agent's is refused before anything is
written to it, and a row that cannot be an item is named for quarantine (:mod:`~agent.transport.spool`).
Pure standard library; it never imports paho.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.errors import PayloadError, TransportError
from agent.transport.spool_types import SpoolItem

CACHE_KIB = 256
"""SQLite's page cache for the spool's connection (``PRAGMA cache_size``), in KiB. Its default,
2000 KiB, fills up once the spool is that large (a broker away for a few hours): every put
sums the rows' sizes (``enforce_limits``), which reads every page, so the cache only ever holds
the last ones read while the file itself stays in the kernel's page cache. Measured with 10,000
spooled rows (6.5 MB): 2.1 MB of SQLite's memory against 0.3 MB, a put about as long (10-15 ms
either way at that size; 2.4 against 1.7 ms with 2,000 rows, which the default cache held
whole) (docs/vision.md, "Peak RSS")."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    mono_ms INTEGER
)
"""

_MONO_COLUMN = "ALTER TABLE spool ADD COLUMN mono_ms INTEGER"
"""For a spool written before ``mono_ms`` (clock.monotonic() at the put, this run's age)."""

_COLUMNS = {
    "spool": ("id", "topic", "payload", "retain", "created_ms", "mono_ms"),
    "quarantine": ("id", "topic", "payload", "created_ms", "reason", "quarantined_ms"),
}
"""The columns of each table, in order; a spool from before ``mono_ms`` lacks only that one."""

_QUARANTINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    topic BLOB,
    payload BLOB,
    created_ms INTEGER,
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL
)
"""


def open_spool_db(path: Path) -> sqlite3.Connection:
    """The spool's database in WAL mode with ``synchronous=FULL``, its tables created."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        problem = _schema_problem(db)  # before anything is written to another program's file
        if problem is None:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.execute(_SCHEMA)
            if "mono_ms" not in _columns(db, "spool"):
                db.execute(_MONO_COLUMN)
            db.execute(_QUARANTINE_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        if db is not None:
            db.close()
        if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
            raise _foreign(path, str(exc)) from exc
        raise TransportError(
            f"{path}: cannot open the offline spool ({exc}); check that state_dir exists "
            "and is writable by the agent"
        ) from exc
    if problem is not None:
        db.close()
        raise _foreign(path, problem)
    if str(mode).lower() != "wal":
        db.close()
        raise TransportError(f"{path}: the spool needs SQLite WAL mode, the file system gave {mode!r}")
    return db


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({table})"))


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """Which table has columns other than the agent's, or None (a missing table is created).
    Something else's ``spool`` table took no row (every put failed) and then failed the figures
    read at close."""
    for table, expected in _COLUMNS.items():
        found = _columns(db, table)
        if found and found not in (expected, expected[:-1] if table == "spool" else expected):
            return f"its {table} table has the columns ({', '.join(found)}), not ({', '.join(expected)})"
    return None


def _foreign(path: Path, problem: str) -> PayloadError:
    return PayloadError(
        f"{path}: not an offline spool this agent wrote ({problem}); move the file away "
        f"(e.g. `mv {path} {path}.bad`, with its -wal and -shm files) and the agent starts a new, "
        "empty spool"
    )


def item_from_row(row: tuple[object, ...]) -> SpoolItem | str:
    """A row as a :class:`SpoolItem`, or why it cannot be one (the reason for quarantine)."""
    row_id, topic, payload, retain, created = row
    if not isinstance(topic, str) or not topic:
        return f"topic is {type(topic).__name__}, not text"
    if not isinstance(payload, bytes | str):
        return f"payload is {type(payload).__name__}, not bytes"
    if not isinstance(retain, int) or not isinstance(created, int):
        return "retain or created_ms is not an integer"
    data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload
    assert isinstance(row_id, int)  # noqa: S101 - INTEGER PRIMARY KEY
    return SpoolItem(row_id, topic, data, bool(retain), created)
