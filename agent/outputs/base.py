"""The output interface and the message it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One signed payload for one topic (the full topic, base included)."""

    topic: str
    payload: bytes
    retain: bool = False


class Output(Protocol):
    """Started once, fed messages from the service thread, stopped once."""

    def start(self) -> None: ...

    def send(self, message: Message) -> None: ...

    def stop(self, timeout: float) -> None:
        """Within about ``timeout`` s, however long a broker or anything outside the process
        would take: the service's stop budget is shared by all outputs."""
