"""Where verified messages go: SQLite for one site, PostgreSQL for replicas sharing the work.

Rows are keyed by (device, boot, seq), so QoS 1 redelivery and several replicas handling the
same message never make a second row: the insert is ``ON CONFLICT DO NOTHING`` and the caller
learns whether it was new. A second message under a stored key with other signed content (its
JCS form differs: re-ordered or re-spaced JSON is the same message) is a conflict (a replay of
a used sequence number), recorded as a rejection. Migrations are numbered SQL
in this module, applied in order inside a transaction, recorded in ``schema_migrations``.

A PostgreSQL connection lost (a restart, a failover, a terminated backend) fails the call that
finds it broken; the next call connects again. ``unreachable_for`` tells how long every call
has failed that way, which ``collect`` turns into an exit when the database stays away.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from agent.errors import ConfigError, StorageError
from agent.user_files import file_kind

logger = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "conflict"]

LOCK_WITNESS = 1
"""Advisory lock space of a device log's witness head (``lock(cur, LOCK_WITNESS, origin)``)."""
LOCK_DEVICE_KEYS = 2
"""Advisory lock space of the keys of one device."""
LOCK_REJECTIONS = 3
"""Advisory lock space of the rejections' running number."""

MAX_REJECTIONS = 100_000
"""Rows kept in ``rejections``, the newest: junk sent to the receiver must not fill the disk.
``rejection_totals`` keeps the counts per device of every rejection."""

CONNECT_TIMEOUT_S = 5
"""Bound on connecting again to PostgreSQL (a host that does not answer would take minutes)."""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE messages (
            device TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL,
            kid TEXT NOT NULL, typ TEXT NOT NULL, topic TEXT NOT NULL, ts BIGINT NOT NULL,
            body TEXT NOT NULL, payload_sha256 TEXT NOT NULL,
            received_ms BIGINT NOT NULL, receiver TEXT NOT NULL,
            PRIMARY KEY (device, boot, seq));
        CREATE INDEX messages_typ ON messages (typ, device);
        CREATE TABLE rejections (
            payload_sha256 TEXT NOT NULL, topic TEXT NOT NULL, device TEXT,
            reason TEXT NOT NULL, received_ms BIGINT NOT NULL, receiver TEXT NOT NULL,
            PRIMARY KEY (payload_sha256, topic));
        CREATE TABLE device_keys (
            kid TEXT PRIMARY KEY, device TEXT NOT NULL, jwk TEXT NOT NULL,
            source TEXT NOT NULL, added_ms BIGINT NOT NULL);
        CREATE TABLE devices (
            device TEXT PRIMARY KEY, last_seen_ms BIGINT NOT NULL, kid TEXT NOT NULL);
        CREATE TABLE witness (
            origin TEXT PRIMARY KEY, device TEXT NOT NULL, size BIGINT NOT NULL,
            root TEXT NOT NULL, note TEXT NOT NULL, cosigned_ms BIGINT NOT NULL,
            boot BIGINT NOT NULL, seq BIGINT NOT NULL);
        CREATE TABLE witness_events (
            origin TEXT NOT NULL, note_sha256 TEXT NOT NULL, device TEXT NOT NULL,
            kind TEXT NOT NULL, detail TEXT NOT NULL, at_ms BIGINT NOT NULL,
            PRIMARY KEY (origin, note_sha256));
        CREATE TABLE rollups (
            site TEXT NOT NULL, window_start BIGINT NOT NULL, devices BIGINT NOT NULL,
            body TEXT NOT NULL, receiver TEXT NOT NULL, PRIMARY KEY (site, window_start));
        """,
    ),
    (
        2,
        # the SHA-256 of the message's JCS form: a re-serialised copy has other wire bytes
        # (payload_sha256) but the same signed content; NULL in rows stored before
        "ALTER TABLE messages ADD COLUMN envelope_sha256 TEXT",
    ),
    (
        3,
        # rejections: a running number ``n`` (the oldest go beyond ``max_rejections``), given to
        # the rows stored before in the order they came; rejection_totals counts every rejection
        # per registered device ('' for every other name), rows dropped or not
        """
        ALTER TABLE rejections ADD COLUMN n BIGINT;
        UPDATE rejections SET n = t.rn FROM (
            SELECT payload_sha256 AS h, topic AS tp,
                   ROW_NUMBER() OVER (ORDER BY received_ms, payload_sha256, topic) AS rn
            FROM rejections) t
        WHERE rejections.payload_sha256 = t.h AND rejections.topic = t.tp;
        CREATE INDEX rejections_n ON rejections (n);
        CREATE TABLE rejection_totals (device TEXT PRIMARY KEY, rejected BIGINT NOT NULL);
        INSERT INTO rejection_totals (device, rejected)
            SELECT CASE WHEN device IN (SELECT device FROM device_keys) THEN device ELSE '' END, COUNT(*)
            FROM rejections GROUP BY 1
        """,
    ),
)


MAX_REASON_CHARS = 500
"""Longest rejection reason stored (the rest is cut, marked with ``…``)."""
MAX_TOPIC_CHARS = 300
"""Longest topic (and device) stored in a rejection row."""


def sanitise(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` safe for any TEXT column and for a log line: control characters (NUL above all,
    which PostgreSQL TEXT cannot hold) and lone surrogates (not UTF-8) are written as Python
    escapes (``\\x00``, ``\\ud800``), and it is cut to ``limit`` characters. A reason quotes what
    a device (or anyone who can publish) sent; stored as is, one NUL made the insert fail on every
    delivery."""
    out = "".join(
        ch if unicodedata.category(ch) not in ("Cc", "Cs") else repr(ch)[1:-1] for ch in text
    )
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass(frozen=True)
class StoredMessage:
    device: str
    boot: int
    seq: int
    kid: str
    typ: str
    topic: str
    ts: int
    body: str
    payload_sha256: str
    """SHA-256 of the bytes as they arrived."""
    received_ms: int
    envelope_sha256: str | None = None
    """SHA-256 of the envelope's JCS form (with ``sig``): equal for every serialisation."""


def _same_message(payload_sha256: str, envelope_sha256: str | None, msg: StoredMessage) -> bool:
    """Is ``msg`` the stored message again, whatever its serialisation? The same signed content
    has one JCS form. A row stored before that hash was kept has only its wire bytes' hash,
    which is the JCS form's for every message the agent sends (it publishes the JCS bytes)."""
    if envelope_sha256 is not None and msg.envelope_sha256 is not None:
        return bool(envelope_sha256 == msg.envelope_sha256)
    return payload_sha256 in (msg.payload_sha256, msg.envelope_sha256)


@dataclass(frozen=True)
class GapRow:
    device: str
    boot: int
    first: int
    last: int


SQLITE = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, read as SQLAlchemy reads it: the path follows three slashes, so
    ``sqlite:////var/lib/x.db`` is /var/lib/x.db and ``sqlite:///x.db`` the relative x.db (the
    fleet config gives it joined to its folder); None for PostgreSQL."""
    return Path(url.removeprefix(SQLITE)) if url.startswith(SQLITE) else None


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """The database file, in WAL mode. ConfigError (exit 2) naming ``database`` for a path that
    is no regular file (a folder, a FIFO, /dev/zero), StorageError (exit 1) for one SQLite cannot
    use (read-only, locked, corrupt): before, a traceback."""
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(f"database {path}: cannot inspect it: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"database {path}: is {file_kind(info.st_mode)}, not a SQLite database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"database {path}: cannot open the SQLite database: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"database {path}: cannot use the SQLite database: {exc}") from None
    return conn


_PASSWORD = re.compile(r"^([a-z]+://[^:/@]*):(.*)@", re.DOTALL)
"""User, then the password up to the last '@' (it may hold an unencoded '/', '#' or '@')."""


def _redacted(url: str) -> str:
    """A PostgreSQL URL without its password."""
    return _PASSWORD.sub(r"\1:***@", url)


def _without_password(url: str, text: str) -> str:
    """``text`` (libpq's words, which may quote the URL or a part of it) without the password."""
    text = text.strip()
    m = _PASSWORD.match(url)
    if m is None or not m.group(2):
        return text
    password = m.group(2)
    for secret in sorted({password, unquote(password)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text.replace(url, _redacted(url))


class Store:
    """One connection, used under a lock (the receiver has one worker and the HTTP thread)."""

    def __init__(self, url: str, *, max_rejections: int = MAX_REJECTIONS) -> None:
        if max_rejections < 1:
            raise ValueError(f"max_rejections must be at least 1, not {max_rejections}")
        self.url = url
        self.max_rejections = max_rejections
        self.dialect: Literal["sqlite", "postgres"]
        self._lock = threading.RLock()
        self._closed = False
        self._lost_since: float | None = None
        """Monotonic time of the first call that found the connection lost, since the last call
        that worked; None while the database answers."""
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        """What the database driver raises (the service keeps running through these)."""
        self.outage_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
        """Driver errors about the database, not the data (locked, gone, out of space): the
        message is retried, never given up (``transient``)."""
        path = sqlite_path(url)
        if path is not None:
            self._conn: Any = _open_sqlite(path)
            self.dialect = "sqlite"
        else:
            import psycopg  # noqa: PLC0415 - only receivers on PostgreSQL need it

            try:
                self._conn = psycopg.connect(url, autocommit=True)
            except psycopg.ProgrammingError as exc:  # a malformed URL or option
                why = _without_password(url, str(exc))
                raise ConfigError(f"database {_redacted(url)}: not a usable PostgreSQL URL: {why}") from None
            except psycopg.Error as exc:  # the server: down, refusing, unknown database; a bad port
                why = _without_password(url, str(exc))
                raise StorageError(f"database {_redacted(url)}: cannot connect: {why}") from None
            self.dialect = "postgres"
            self.errors = (psycopg.Error,)
            self.outage_errors = (psycopg.OperationalError,)
        self.migrate()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def _lost(self) -> bool:
        return self.dialect == "postgres" and bool(self._conn.broken or self._conn.closed)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection, under the lock: a lost one is replaced first; each call that fails
        on a lost connection (or cannot connect) extends the outage, each that works ends it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            try:
                if self._lost():
                    import psycopg  # noqa: PLC0415

                    logger.warning("the PostgreSQL connection was lost; connecting again")
                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
                yield self._conn
            except BaseException:
                if self._lost() and self._lost_since is None:
                    self._lost_since = time.monotonic()
                raise
            if self._lost_since is not None:
                logger.warning("the database answers again after %.1f s", self.unreachable_for())
                self._lost_since = None

    def transient(self, exc: BaseException) -> bool:
        """Is ``exc`` an outage of the database (connection lost, cannot connect, locked,
        shut down), which the same message will get past later, rather than something about
        the message (a value the column cannot hold, a bug), which it never will?"""
        with self._lock:
            lost = self._lost_since is not None or (not self._closed and self._lost())
        return lost or isinstance(exc, self.outage_errors)

    def unreachable_for(self) -> float:
        """Seconds since the connection was found lost with every call failing since; 0 when
        the last call worked."""
        with self._lock:
            return 0.0 if self._lost_since is None else time.monotonic() - self._lost_since

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction; on SQLite taken at once (BEGIN IMMEDIATE) so replicas queue."""
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            try:
                yield cur
            except BaseException:
                if not self._lost():  # a lost connection has no transaction left to roll back
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def lock(self, cur: Any, space: int, name: str) -> None:
        """Serialise the transactions of every replica about ``name`` until this one ends,
        also when there is no row yet to lock (``SELECT ... FOR UPDATE`` locks nothing then).
        PostgreSQL: an advisory transaction lock; SQLite has one writer at a time already."""
        if self.dialect == "postgres":
            self.execute(cur, "SELECT pg_advisory_xact_lock(?, hashtext(?))", (space, name))

    def execute(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(row) for row in cur.fetchall()]

    def migrate(self) -> None:
        """Apply the migrations not yet recorded; replicas starting together take turns."""
        with self.transaction() as cur:
            if self.dialect == "postgres":
                cur.execute("SELECT pg_advisory_xact_lock(7220461)")
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            cur.execute("SELECT version FROM schema_migrations")
            done = {int(row[0]) for row in cur.fetchall()}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    cur.execute(statement)
                self.execute(cur, "INSERT INTO schema_migrations (version) VALUES (?)", (version,))

    # --- messages ------------------------------------------------------------------------------

    def insert_message(self, msg: StoredMessage, receiver: str) -> Outcome:
        with self.transaction() as cur:
            self.execute(
                cur,
                "INSERT INTO messages (device, boot, seq, kid, typ, topic, ts, body, payload_sha256, "
                "received_ms, receiver, envelope_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device, boot, seq) DO NOTHING",
                (
                    msg.device,
                    msg.boot,
                    msg.seq,
                    msg.kid,
                    msg.typ,
                    msg.topic,
                    msg.ts,
                    msg.body,
                    msg.payload_sha256,
                    msg.received_ms,
                    receiver,
                    msg.envelope_sha256,
                ),
            )
            if cur.rowcount == 1:
                self.execute(
                    cur,
                    "INSERT INTO devices (device, last_seen_ms, kid) VALUES (?, ?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET last_seen_ms = excluded.last_seen_ms, kid = excluded.kid",
                    (msg.device, msg.received_ms, msg.kid),
                )
                return "stored"
            self.execute(
                cur,
                "SELECT payload_sha256, envelope_sha256 FROM messages "
                "WHERE device = ? AND boot = ? AND seq = ?",
                (msg.device, msg.boot, msg.seq),
            )
            row = cur.fetchone()
        return "duplicate" if row is not None and _same_message(row[0], row[1], msg) else "conflict"

    def reject(
        self,
        *,
        payload_sha256: str,
        topic: str,
        device: str | None,
        reason: str,
        received_ms: int,
        receiver: str,
    ) -> None:
        """Record a rejected message once (a copy of one still kept is not counted again); it
        counts in ``rejection_totals`` under ``device`` if that has a key, else under ''
        (anyone can publish on a made-up name), and the oldest rows beyond ``max_rejections``
        go."""
        device = None if device is None else sanitise(device, MAX_TOPIC_CHARS)
        with self.transaction() as cur:
            self.lock(cur, LOCK_REJECTIONS, "rejections")  # one running number for every replica
            n = int(self.execute(cur, "SELECT COALESCE(MAX(n), 0) + 1 FROM rejections").fetchone()[0])
            self.execute(
                cur,
                "INSERT INTO rejections (payload_sha256, topic, device, reason, received_ms, receiver, n) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (payload_sha256, topic) DO NOTHING",
                (payload_sha256, sanitise(topic, MAX_TOPIC_CHARS), device, sanitise(reason), received_ms,
                 receiver, n),
            )
            if cur.rowcount != 1:
                return
            registered = device is not None and self.execute(
                cur, "SELECT 1 FROM device_keys WHERE device = ?", (device,)
            ).fetchone() is not None
            self.execute(
                cur,
                "INSERT INTO rejection_totals (device, rejected) VALUES (?, 1) ON CONFLICT (device) "
                "DO UPDATE SET rejected = rejection_totals.rejected + 1",
                (device if registered else "",),
            )
            self.execute(cur, "DELETE FROM rejections WHERE n <= ?", (n - self.max_rejections,))

    def rejected_per_device(self) -> dict[str, int]:
        """Rejections ever recorded per registered device ('' for every other name), also those
        whose rows went beyond ``max_rejections``."""
        return {str(d): int(c) for d, c in self.query("SELECT device, rejected FROM rejection_totals")}

    def gaps(self) -> list[GapRow]:
        """Sequence numbers missing inside one boot of one device, as stored so far."""
        rows = self.query(
            "SELECT device, boot, prev + 1, seq - 1 FROM (SELECT device, boot, seq, "
            "LAG(seq) OVER (PARTITION BY device, boot ORDER BY seq) AS prev FROM messages) t "
            "WHERE prev IS NOT NULL AND seq > prev + 1 ORDER BY device, boot, prev"
        )
        return [GapRow(str(d), int(b), int(f), int(last)) for d, b, f, last in rows]

    # --- keys ----------------------------------------------------------------------------------

    def add_key(
        self, kid: str, device: str, jwk: str, source: str, now_ms: int, *, first_for_device: bool = False
    ) -> str | None:
        """Record a device key; returns the device that owns ``kid`` (the first claim wins).

        ``first_for_device`` (trust on first use): only if ``device`` has no other key, checked
        in the same transaction under a lock on the device, so that two replicas handling two
        different first keys of one new device at once never both trust theirs; None when it
        has one."""
        with self.transaction() as cur:
            self.lock(cur, LOCK_DEVICE_KEYS, device)
            if first_for_device:
                self.execute(cur, "SELECT 1 FROM device_keys WHERE device = ? AND kid <> ?", (device, kid))
                if cur.fetchone() is not None:
                    return None
            self.execute(
                cur,
                "INSERT INTO device_keys (kid, device, jwk, source, added_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kid) DO NOTHING",
                (kid, device, jwk, source, now_ms),
            )
            self.execute(cur, "SELECT device FROM device_keys WHERE kid = ?", (kid,))
            return str(cur.fetchone()[0])

    def trusted_keys(self) -> list[tuple[str, str, str]]:
        """(kid, device, jwk) of every trusted key."""
        return [
            (str(k), str(d), str(j)) for k, d, j in self.query("SELECT kid, device, jwk FROM device_keys")
        ]

    def device_has_key(self, device: str) -> bool:
        return bool(self.query("SELECT 1 FROM device_keys WHERE device = ?", (device,)))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()
