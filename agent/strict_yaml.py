"""A YAML reader for files that people (and attackers) write: plain data, bounded, unambiguous.

PyYAML's safe loader still expands aliases (a 300-byte "billion laughs" takes gigabytes),
recurses once per nesting level (a 5000-deep list is a RecursionError), keeps the last of two
equal keys silently, and reads YAML 1.1 words (``yes``, ``on``, ``012``) as booleans and octal.
This reader walks the parser's event stream with an explicit stack instead, and refuses
anchors, aliases, tags, duplicate keys, more than one document, nesting deeper than
``MAX_DEPTH``, more than ``MAX_VALUES`` values and texts over ``MAX_BYTES``. Plain scalars are
resolved by the YAML 1.2 core schema, narrowed: ``true``/``false``, ``null``/``~``/empty,
decimal integers and finite decimal floats; everything else is a string, so the schema's own
strict types decide (``threads: true`` is a boolean, never 1).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.errors import ConfigError, clipped, shown

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 20_000
MAX_NUMBER_DIGITS = 40

Path_ = tuple[str | int, ...]
LineIndex = dict[Path_, int]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 30x faster

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")


class YamlRefused(ConfigError):
    """The text is not YAML, or uses a YAML feature or size this reader refuses; ``why`` says
    which without the file and line, for a caller that wrote the text and names its own place."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.why = why


def resolve_plain(text: str) -> Any:
    """The value of an unquoted scalar: null, bool, int, finite float, else the text itself."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if len(text) <= MAX_NUMBER_DIGITS:
        if _INT.fullmatch(text):
            return int(text, 10)
        if _FLOAT.fullmatch(text):
            value = float(text)
            return value if math.isfinite(value) else text
    return text


@dataclass
class _Open:
    """A mapping or sequence being filled."""

    path: Path_
    value: dict[str, Any] | list[Any]
    key: str | None = None
    key_lines: dict[str, int] = field(default_factory=dict)


def parse(text: str, source: str = "<config>") -> tuple[Any, LineIndex]:
    """Parse one YAML document into plain data plus the line of every key path (1-based).

    Raises YamlRefused with ``source:line`` for malformed YAML and every refused feature.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YamlRefused(source, f"{size} bytes is too large for a config (at most {MAX_BYTES})")
    try:
        return _build(yaml.parse(text, Loader=_Loader), source)
    except yaml.reader.ReaderError:  # it says "position N", in bytes for libyaml, in characters for PyYAML
        raise _unprintable(text, source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise YamlRefused(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def _unprintable(text: str, source: str) -> YamlRefused:
    """The reader's refusal of a character (a NUL, another control character) told by line and
    column, 1-based, as every other refusal is by line; the character's code, never the text."""
    found = yaml.reader.Reader.NON_PRINTABLE.search(text)  # the set PyYAML and libyaml refuse
    if found is None:  # not expected: the reader refused something else
        return YamlRefused(source, "not valid YAML: it holds a character YAML does not allow")
    char = found.group()
    line, column = _line_column(text, found.start())
    kind = (
        "a NUL byte" if char == "\0"
        else "a control character" if unicodedata.category(char) == "Cc"
        else "a character YAML does not allow"
    )
    return YamlRefused(
        f"{source}:{line}",
        f"not valid YAML: {kind} (U+{ord(char):04X}) at column {column}; YAML text holds no control "
        "characters but tabs and line breaks: delete it (an editor that shows invisible characters finds it)",
    )


def _line_column(text: str, index: int) -> tuple[int, int]:
    """The 1-based line and column of ``text[index]``. Lines break where YAML breaks them (\\n,
    \\r\\n, \\r, U+0085, U+2028, U+2029), which is where ``splitlines`` does in text holding no
    control character (the other breaks it knows are control characters)."""
    lines = (text[:index] + "x").splitlines()
    return len(lines), len(lines[-1])


def _build(events: Any, source: str) -> tuple[Any, LineIndex]:
    builder = _Builder(source)
    events = iter(events)
    try:
        for event in events:
            builder.feed(event)
    except _TooManyValues as over:  # the rest is counted, not kept: how far over the limit
        rest = _values_in(events)
        found = f" ({builder.values + rest} in all)" if rest is not None else ""
        why = f"more than {MAX_VALUES} values{found}; a config is smaller than that"
        raise builder.refuse(over.event, why) from None
    return builder.root, builder.lines


class _TooManyValues(Exception):
    """The value past ``MAX_VALUES``; ``_build`` counts the rest for the refusal."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


def _values_in(events: Any) -> int | None:
    """How many values the rest of ``events`` holds, or None when the rest is not YAML."""
    try:
        return sum(1 for event in events if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)))
    except yaml.YAMLError:
        return None


class _Builder:
    """Plain data from parser events, with an explicit stack: depth costs no recursion."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: LineIndex = {}
        self.stack: list[_Open] = []
        self.root: Any = None
        self.documents = 0
        self.values = 0

    def refuse(self, event: Any, why: str) -> YamlRefused:
        return YamlRefused(f"{self.source}:{event.start_mark.line + 1}", why)

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.refuse(event, "more than one YAML document (---); a config is one document")
        elif isinstance(event, yaml.AliasEvent):
            alias = clipped(str(event.anchor))
            raise self.refuse(event, f"YAML aliases (*{alias}) are not allowed; write the value out")
        elif isinstance(event, yaml.CollectionEndEvent):
            self.stack.pop()
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            self.check(event)
            if isinstance(event, yaml.ScalarEvent):
                self.scalar(event)
            else:
                self.start(event)

    def check(self, event: Any) -> None:
        """Anchors, tags and the value count, for every node."""
        if event.anchor is not None:
            anchor = clipped(event.anchor)
            raise self.refuse(event, f"YAML anchors (&{anchor}) are not allowed; write the value out")
        if event.tag is not None and not (isinstance(event, yaml.ScalarEvent) and event.tag == "!"):
            raise self.refuse(event, f"YAML tags ({clipped(event.tag)}) are not allowed")
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooManyValues(event)

    def expecting_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None

    def scalar(self, event: Any) -> None:
        plain = event.implicit[0] and not event.style and not self.expecting_key()
        self.place(event, resolve_plain(event.value) if plain else event.value)

    def start(self, event: Any) -> None:
        if self.expecting_key():
            raise self.refuse(event, "a key must be a plain name, not a list or mapping")
        if len(self.stack) >= MAX_DEPTH:
            raise self.refuse(event, f"nested deeper than {MAX_DEPTH} levels")
        container: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
        path = self.place(event, container)
        assert path is not None  # noqa: S101 - containers are never keys (refused above)
        self.stack.append(_Open(path, container))

    def place(self, event: Any, value: Any) -> Path_ | None:
        """Put a value in its parent; return its path (None when it was a key)."""
        line = event.start_mark.line + 1
        if not self.stack:
            self.root = value
            self.lines[()] = line
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            path: Path_ = (*top.path, len(top.value))
            top.value.append(value)
            self.lines.setdefault(path, line)
            return path
        if top.key is None:  # this scalar is a key
            if value in top.key_lines:
                raise self.refuse(
                    event,
                    f"duplicate key {shown(value)} (first on line {top.key_lines[value]}); "
                    "each key may appear once",
                )
            top.key_lines[value] = line
            top.key = value
            self.lines[(*top.path, value)] = line
            return None
        path = (*top.path, top.key)
        top.value[top.key] = value
        top.key = None
        return path
