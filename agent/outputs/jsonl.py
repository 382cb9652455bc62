"""JSON-lines output: one ``{"topic": ..., "payload": {...}}`` object per line.

This is the shape ``emotion-agent verify`` reads, so a facility can pipe the agent's stdout (or
the file) straight into a verifier. A file is opened in append mode with 0600 permissions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from agent.outputs.base import Message


class JsonLinesOutput:
    """Writes each message as a JSON line; ``path`` None or "-" means stdout."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = None if path in (None, "-") else Path(str(path))
        self._stream: TextIO | None = None
        self.sent = 0

    def start(self) -> None:
        if self._path is None:
            self._stream = sys.stdout
            return
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._stream = os.fdopen(fd, "a", encoding="utf-8")

    def send(self, message: Message) -> None:
        if self._stream is None:
            raise RuntimeError("JsonLinesOutput.send before start")
        payload = json.loads(message.payload)
        line = json.dumps({"topic": message.topic, "payload": payload}, separators=(",", ":"))
        self._stream.write(line + "\n")
        self._stream.flush()
        self.sent += 1

    def stop(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None
