"""Real servers for the fleet tests: PostgreSQL 15 and a NATS JetStream cluster, on loopback.

PostgreSQL refuses to run as root, so it runs as the ``postgres`` user (Debian's package makes
it) in a temporary data directory; NATS servers run as they are, each with its own JetStream
store, cluster port and MQTT listener (NATS needs a ``server_name`` and JetStream for MQTT).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.mosquitto import free_port


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}: {log.read_text(errors='replace')[-2000:]}")


def _as_postgres() -> dict[str, str]:
    """Popen arguments that run a child as ``postgres`` when we are root (it refuses root)."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


class Postgres:
    """A throwaway PostgreSQL server; ``url(db)`` after ``create(db)``."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed: run tools/system-deps.sh")
        self.bin = Path(found[-1]).parent
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.log = folder / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, **_as_postgres(),  # type: ignore[call-overload]
        )
        log = self.log.open("ab")
        self._proc = subprocess.Popen(  # type: ignore[call-overload]
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=log, stderr=log, **_as_postgres(),
        )
        log.close()
        _wait_port(self.port, self._proc, self.log)
        for _ in range(100):
            ok = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True, check=False,
            )
            if ok.returncode == 0:
                break
            time.sleep(0.1)
        return self

    def create(self, db: str) -> str:
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", db],
            check=True, capture_output=True,
        )
        return self.url(db)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fast shutdown
            self._proc.wait(30)
        self._proc = None


def terminate_connections(url: str, *, via: str | None = None) -> None:
    """What a PostgreSQL restart or failover does to its clients: every other connection to the
    database of ``url`` is ended by the server (asked on ``via``, default ``url``); returns once
    they are gone."""
    import psycopg  # noqa: PLC0415

    database = url.rsplit("/", 1)[1]
    with psycopg.connect(via or url, autocommit=True) as admin:
        others = "datname = %s AND pid <> pg_backend_pid()"
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}", (database,))  # noqa: S608
        deadline = time.monotonic() + 10
        count = f"SELECT COUNT(*) FROM pg_stat_activity WHERE {others}"  # noqa: S608
        while admin.execute(count, (database,)).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise RuntimeError("the connections were not ended within 10 s")
            time.sleep(0.05)


class NatsNode:
    def __init__(self, folder: Path, name: str, cluster_port: int, routes: list[int]) -> None:
        if shutil.which("nats-server") is None:
            raise RuntimeError("nats-server is not installed: run tools/system-deps.sh")
        self.name = name
        self.folder = folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.mqtt_port = free_port()
        self.cluster_port = cluster_port
        self.log = self.folder / "nats.log"
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes if p != cluster_port)
        self.conf = self.folder / "nats.conf"
        cluster = (  # no routes: one server on its own, JetStream not clustered
            f'cluster {{ name: "fleet", listen: 127.0.0.1:{cluster_port}, routes: [{route_urls}] }}\n'
            if routes else ""
        )
        self.conf.write_text(
            f'server_name: "{name}"\n'
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.folder}/js" }}\n'
            f"{cluster}"
            # three copies of the MQTT layer's own streams (sessions, QoS 1 messages): 2.9 makes
            # two, and losing a node that holds one stalls every QoS 1 PUBACK (docs/fleet.md)
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}{', stream_replicas: 3' if routes else ''} }}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsNode:
        log = self.log.open("ab")
        self._proc = subprocess.Popen(["nats-server", "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        _wait_port(self.port, self._proc, self.log)
        return self

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def nats_cluster(folder: Path, size: int = 3) -> list[NatsNode]:
    ports = [free_port() for _ in range(size)]
    return [NatsNode(folder, f"n{i + 1}", ports[i], ports) for i in range(size)]
