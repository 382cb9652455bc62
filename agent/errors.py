"""One exception tree for the whole agent, so the CLI maps failures to exit codes in one place.

    EmotionAgentError
    ├── InputError                 exit 2: something the user gave us is wrong
    │   ├── ConfigError            a config file or value (carries every problem found)
    │   ├── ModelError             a model file missing, altered or unreadable
    │   ├── SourceError            a camera source that cannot be opened or decoded
    │   ├── KeyFileError           a device key missing, unreadable, insecure or of the wrong type
    │   ├── PayloadError           a message, log or file that is malformed
    │   └── BackendUnavailable     a selected backend (Coral, picamera2, ...) is not installed
    └── RuntimeFailure             exit 1: the environment failed while running
        ├── CameraLost             a camera that worked stopped delivering frames
        ├── TransportError         the broker or the spool failed
        └── StorageError           the state folder refused a write (a full disk)

Every message is written for a person: what is wrong, where, and what would fix it, quoting
what it found through ``shown`` or ``clipped`` (bounded). Exceptions are chained with
``raise ... from`` so the cause survives in debug logs.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_INPUT = 2
EXIT_REJECTED = EXIT_RUNTIME
"""``verify`` and ``audit verify``: checked and found bad (2 means it could not be checked)."""

SHOWN = 320
"""How many characters of a value found in a file a message quotes before cutting it: a file
of 256 KiB can hold a 20,000-item list or one long string, and a message is a line of a
terminal or of the journal; a host name (253) or a path as people write them is quoted whole."""
SHOWN_EXAMPLE = 60
"""How much of an example an error derives from a value it quoted already (a full path to write
instead) it shows: its form is what counts (``shortened``)."""


def shown(value: object, limit: int = SHOWN) -> str:
    """``repr(value)`` for a message, cut after ``limit`` characters with ``…`` and the value's
    size (characters, items or keys), so a long value still says what it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = _count(len(value), "character")
    elif isinstance(value, (list, tuple)):
        size = f"a list of {_count(len(value), 'item')}"
    elif isinstance(value, dict):
        size = f"a mapping of {_count(len(value), 'key')}"
    else:
        size = _count(len(text), "character")
    return f"{text[:limit]}… ({size})"


def clipped(text: str, limit: int = SHOWN) -> str:
    """``text`` (a key or anchor name from a file, quoted as written) cut as ``shown`` cuts."""
    return text if len(text) <= limit else f"{text[:limit]}… ({_count(len(text), 'character')})"


def shortened(example: str) -> str:
    """An example derived from a value a message quoted already (with its size): its first
    ``SHOWN_EXAMPLE`` characters, then ``…``."""
    return example if len(example) <= SHOWN_EXAMPLE else f"{example[:SHOWN_EXAMPLE]}…"


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}" + ("" if n == 1 else "s")


class EmotionAgentError(Exception):
    """Base of every error the agent raises on purpose."""

    exit_code = EXIT_RUNTIME


class InputError(EmotionAgentError):
    """Something the user supplied is wrong; retrying will not help."""

    exit_code = EXIT_INPUT


MAX_LISTED = 20
"""Problems a ConfigError lists when printed; the rest are counted (``problems`` keeps them all)."""


class ConfigError(InputError):
    """A config file or value is invalid; ``problems`` lists every one found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    def __str__(self) -> str:
        """The message and the first ``MAX_LISTED`` problems, the rest counted: 15,000 wrong
        values made 15,000 lines (1.35 MB) on the terminal, the journal or an installer's log."""
        head = super().__str__()
        if not self.problems:
            return head
        lines = [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        rest = len(self.problems) - MAX_LISTED
        if rest > 0:
            lines.append(f"  ... and {rest:,} more problems (fix these first)")
        return head + "\n" + "\n".join(lines)


class ModelError(InputError):
    """A model file is missing, does not match its manifest hash, or cannot be loaded."""


class SourceError(InputError):
    """A camera source cannot be opened or its content cannot be decoded."""


class KeyFileError(InputError):
    """A device key is missing, unreadable, readable by others, or not Ed25519."""


class PayloadError(InputError):
    """A message, log entry or data file is malformed."""


class BackendUnavailable(InputError):
    """A selected backend is not installed; the message says what to install."""


class RuntimeFailure(EmotionAgentError):
    """The environment failed while running; a supervisor may retry."""

    exit_code = EXIT_RUNTIME


class CameraLost(RuntimeFailure):
    """A camera that was delivering frames stopped."""


class TransportError(RuntimeFailure):
    """The MQTT broker or the offline spool failed."""


class StorageError(RuntimeFailure):
    """A file in the state folder could not be written (a full disk, a read-only mount)."""
