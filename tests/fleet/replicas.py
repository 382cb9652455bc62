"""Receiver replicas as real processes (``python -m agent collect``), for the cluster tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agent.crypto import generate_keypair
from agent.fleet.store import Store


class Replica:
    def __init__(self, folder: Path, receiver_id: str, *, source: dict[str, Any], database: str,
                 keys_dir: Path, witness_key: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        key = generate_keypair(folder / "key")
        self.config = folder / "fleet.yaml"
        self.config.write_text(yaml.safe_dump({
            "receiver_id": receiver_id,
            "source": source,
            "database": database,
            "state_dir": str(folder / "state"),
            "private_key": str(key.private_path),
            "registry": {"keys_dir": str(keys_dir)},
            "witness": {"name": "witness.test", "key": str(witness_key)},
            "http": {"port": 0},
        }))
        self.log = folder / "collect.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--log-level", "INFO", "collect", "-c", str(self.config)],
            stdout=log, stderr=log,
        )
        log.close()
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.proc = None
        return code


def wait_rows(url: str, expected: int, timeout: float = 90.0) -> int:
    """Poll the shared database until ``expected`` messages are stored (or time runs out)."""
    store = Store(url)
    try:
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            count = int(store.query("SELECT COUNT(*) FROM messages")[0][0])
            if count >= expected:
                time.sleep(1.0)  # a late duplicate would show now
                return int(store.query("SELECT COUNT(*) FROM messages")[0][0])
            time.sleep(0.2)
        return count
    finally:
        store.close()
