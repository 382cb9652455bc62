"""Base class of every config section, kept apart so subsystems can define their own sections
(``agent/<package>/settings.py``) without importing the whole config module; and the checks
sections share (a NUL byte in any value, a broker host name, where a relative path leads), and
how a config file's validation errors are told (``validation_problems``), the same for every
file the agent reads (its config, the fleet's, a site file)."""

from __future__ import annotations

import difflib
import ipaddress
import pwd
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo

from agent.errors import clipped, shortened, shown

if TYPE_CHECKING:
    from agent.strict_yaml import LineIndex


def nul_problem(value: object) -> str | None:
    """Why a path or text value cannot be used: a NUL byte, which no file name, topic or host
    may hold (``os.stat`` raises ValueError on it); None when it can."""
    if isinstance(value, (str, Path)) and "\0" in str(value):
        at = str(value).index("\0")
        return f"contains a NUL byte (\\0) at character {at}; no file name or text value may hold one"
    return None


class Section(BaseModel):
    """Unknown keys are errors; values are immutable once loaded; no path or text value holds
    a NUL byte and no path starts with ~ (named by its key, as every other error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        problem = nul_problem(value) or tilde_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def tilde_problem(value: object) -> str | None:
    """Why a path starting with ``~`` cannot be used: nothing expands it (no shell reads the
    config), so ``~/x`` would be a folder named ``~``. Paths held in text keys (``outputs.jsonl``,
    a file ``camera.source``) are given here as a ``Path`` by their own validators."""
    if isinstance(value, Path) and value.parts and value.parts[0].startswith("~"):
        example = _home_example(value.parts[0][1:]).joinpath(*value.parts[1:])
        return (
            f"starts with ~, which is not expanded (found {shown(str(value))}); "
            f"write the full path, e.g. {shortened(str(example))}"
        )
    return None


def _home_example(user: str) -> Path:
    """The folder ``~user`` stands for, for an error's example: the user database's home
    (``~root`` is /root), else /home/USER; a bare ``~`` shows the Pi's default user, pi."""
    if not user:
        return Path("/home/pi")
    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except (KeyError, ValueError):  # no such user; ValueError: a NUL byte, refused anyway
        return Path("/home", user)


CONFIG_FOLDER = "config_folder"
"""Validation context key: the absolute folder of the config file being read (``load_config``)."""


def config_folder(info: ValidationInfo) -> Path | None:
    """The folder relative paths are read from, or None for text read without a file (kept as
    written, so relative to the working folder)."""
    folder = info.context.get(CONFIG_FOLDER) if isinstance(info.context, dict) else None
    return folder if isinstance(folder, Path) else None


def in_config_folder(path: Path, info: ValidationInfo) -> Path:
    """A relative path is read from the config file's folder, not the working folder: systemd
    starts the service in /, so ``state_dir: state`` was /state there and another folder for
    ``check-config`` run by hand. Every command reads the file through ``load_config``, so all
    of them (check-config, run and each reload, policy explain, analyze) see the same paths."""
    problem = tilde_problem(path)  # first: /etc/emotion-agent/~/x would hide the ~
    if problem:
        raise ValueError(problem)
    folder = config_folder(info)
    return folder / path if folder is not None and not path.is_absolute() else path


ConfigPath = Annotated[Path, AfterValidator(in_config_folder)]
"""A file or folder the agent's config names: relative means beside the config file."""


KeyNamer = Callable[[tuple[str | int, ...]], str]
"""How a problem names the key at a YAML location: ``camera.fps (agent.yaml:6)``."""


def validation_problems(
    exc: ValidationError, lines: LineIndex, source: str, model: type[BaseModel]
) -> list[str]:
    """One line per error of ``exc``: the key as the YAML writes it, the file and line, what is
    wrong (pydantic's ``Value error, `` prefix dropped: the validators' messages name what was
    found and what to write), then the key's title and description from ``model``."""

    def name(key: tuple[str | int, ...]) -> str:
        line = next((lines[key[:cut]] for cut in range(len(key), -1, -1) if key[:cut] in lines), None)
        where = f"{source}:{line}" if line else source
        return f"{dotted(key) or '(top level)'} ({where})"

    return named_problems(exc, model, name)


def dotted(key: tuple[str | int, ...]) -> str:
    """``camera.fps``, ``policy.zones.0.name``: a key as the YAML writes it, each name cut as
    ``agent.errors.clipped`` cuts (an unknown key's name is text from the file as much as a value)."""
    return ".".join(clipped(str(part)) for part in key)


def named_problems(exc: ValidationError, model: type[BaseModel], name: KeyNamer) -> list[str]:
    """``validation_problems`` with each key named by ``name``: for YAML that another file's
    keys were copied into (a site file's agent: section), so a problem names where it was written."""
    problems = []
    for err in exc.errors():
        loc, info = _key_of(tuple(err["loc"]), model)
        allowed = _allowed_beside(tuple(err["loc"]), model) if err["type"] == "extra_forbidden" else []
        problem = f"{name(loc)}: {_describe(err, allowed)}"
        about = _field_help(info) if err["type"] != "extra_forbidden" else None
        problems.append(f"{problem}. {about}" if about else problem)
    return problems


def _field_help(info: FieldInfo | None) -> str | None:
    """``title: description`` of a key, as the JSON Schema shows it; None for an unknown key."""
    if info is None or not info.description:
        return None
    return f"{info.title}: {info.description}" if info.title else info.description


SECRET_NAME = re.compile(r"pass|pwd|secret|token|credential|api_?key", re.IGNORECASE)
"""An unknown key named so may hold a secret: its value is never quoted in an error."""
PASSWORD_NAME = re.compile(r"pass|pwd", re.IGNORECASE)


MAX_KEYS_LISTED = 12
"""An unknown key's section lists its keys when it has at most this many (else only a close match)."""


def close_key(name: str, allowed: list[str]) -> str | None:
    """The key ``name`` is probably a misspelling of: close as a whole, and in its first word
    (``frames_days`` is not a misspelt ``stats_days``: frames have no retention at all)."""
    head = name.split("_", 1)[0]
    for key in difflib.get_close_matches(name, allowed, n=3, cutoff=0.6):
        if difflib.SequenceMatcher(None, head, key.split("_", 1)[0]).ratio() >= 0.6:
            return key
    return None


def _spelling(name: str, allowed: list[str]) -> str:
    """``remove it or check its spelling``, with the key it is probably a misspelling of, or
    the keys the section has: the error named the wrong key but not the right one."""
    close = close_key(name, allowed)
    if close:
        return f"did you mean {close}? (else remove it)"
    if allowed and len(allowed) <= MAX_KEYS_LISTED:
        return f"remove it or check its spelling; the keys here are {', '.join(allowed)}"
    return "remove it or check its spelling"


def _describe(err: Any, allowed: list[str] | None = None) -> str:
    """What is wrong, quoting at most ``agent.errors.SHOWN`` characters of what was found: the
    value itself, and in a message the value a validator was given (``{value!r}``, as the
    validators quote it) or a text of pydantic's context (a union's tag). ``allowed``: for an
    unknown key, the keys its section has."""
    kind = err["type"]
    found = err.get("input")
    if kind == "extra_forbidden":
        name = str(err["loc"][-1]) if err["loc"] else ""
        fix = _spelling(name, allowed or [])
        if isinstance(found, dict):  # its keys tell what it is; its values may be secrets
            keys = ", ".join(clipped(str(k)) for k in list(found)[:10])
            return f"unknown key (found a mapping of {keys}); {fix}"
        meant = close_key(name, allowed or []) or ""  # a misspelt secret's name: `pasword`
        if SECRET_NAME.search(name) or SECRET_NAME.search(meant) or (
            isinstance(found, str) and "PRIVATE KEY" in found
        ):
            password = PASSWORD_NAME.search(name)
            hint = "; a password is read from a file, named by password_file" if password else ""
            return f"unknown key (its value is not shown: the name says it may be a secret); {fix}{hint}"
        return f"unknown key (found {shown(found)}); {fix}"
    if kind == "missing":
        return "required key is missing"
    msg = _quoted_shown(str(err["msg"]), found, err.get("ctx") or {})
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return f"{msg} (found {shown(found) if not isinstance(found, dict) else 'a mapping'})"


def _quoted_shown(msg: str, found: object, ctx: dict[str, Any]) -> str:
    """``msg`` with a long value it quotes cut as ``shown`` cuts it."""
    if not isinstance(found, dict):  # a section's rule quotes its keys' values itself
        quoted, cut = repr(found), shown(found)
        if cut != quoted:
            msg = msg.replace(quoted, cut)
    for text in ctx.values():
        if isinstance(text, str) and clipped(text) != text:
            msg = msg.replace(text, clipped(text))
    return msg


def _key_of(
    loc: tuple[str | int, ...], model: type[BaseModel]
) -> tuple[tuple[str | int, ...], FieldInfo | None]:
    """The key at pydantic's ``loc`` as the YAML writes it, and its field (None for an unknown
    key). pydantic's own steps are dropped: ``function-after[...]``, and the tag of a section a
    discriminator chose (the fleet's ``source.nats.stream`` is ``source.stream`` in the file)."""
    key, info, _ = _walk(loc, model)
    return key, info


def _allowed_beside(loc: tuple[str | int, ...], model: type[BaseModel]) -> list[str]:
    """The keys of the section holding the key at pydantic's ``loc`` (its siblings), sorted."""
    _, _, sections = _walk(loc[:-1], model)
    return sorted({k for s in sections for k in s.model_fields})


def _walk(
    loc: tuple[str | int, ...], model: type[BaseModel]
) -> tuple[tuple[str | int, ...], FieldInfo | None, list[type[BaseModel]]]:
    """Follow ``loc`` down the sections: (the key as written, its field, the sections it holds)."""
    sections = [model]
    key: list[str | int] = []
    info = None
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(part, str):
            owner = next((s for s in sections if part in s.model_fields), None)
            tagged = [s for s in sections if owner is None and len(sections) > 1 and _has_tag(s, part)]
            if tagged:
                sections = tagged
                continue
            info = owner.model_fields[part] if owner is not None else None
            sections = _sections_of(info.annotation) if info is not None else []
        key.append(part)  # a list index keeps the list's sections
    return tuple(key), info, sections


def _has_tag(section: type[BaseModel], tag: str) -> bool:
    """Is ``tag`` how pydantic names ``section`` in a union: the value of its literal field
    (``kind: nats``) for a discriminated one, else its class name."""
    fields = section.model_fields.values()
    literals = (get_args(f.annotation) for f in fields if get_origin(f.annotation) is Literal)
    return tag == section.__name__ or any(tag in values for values in literals)


def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The section models inside an annotation (``X``, ``X | Y``, ``X | None``, ``list[X]``,
    ``Annotated``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in get_args(annotation) for s in _sections_of(arg)]


MAX_HOST_NAME = 253
MAX_LABEL = 63
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HOST_RULE = (
    "a host is an IP address or a DNS name: dot-separated labels of 1-63 letters, digits, '-' "
    "or '_', not starting or ending with '-', at most 253 characters in all"
)


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address nor a DNS name, or None.

    paho hands the name to ``socket``, which encodes it with the idna codec: an empty label
    (``broker..example``) or one over 63 characters raised UnicodeError in paho's network
    thread. Non-ASCII names are judged by their idna (xn--) form, as the resolver sees them."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if host.startswith("[") and host.endswith("]"):
        problem: str | None = "has brackets; an IPv6 address is written without them (e.g. ::1)"
    else:
        problem = _name_problem(host.removesuffix("."))  # a fully-qualified name may end in a dot
    return f"{problem}; {_HOST_RULE}" if problem else None


def _name_problem(name: str) -> str | None:
    for label in name.split("."):
        if not label:
            return "has an empty label (a leading or double dot)"
        if len(label) > MAX_LABEL:
            return f"has a label of {len(label)} characters"
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        return f"is not a valid international host name ({exc})"
    if len(name) > MAX_HOST_NAME:
        return f"is {len(name)} characters long"
    bad = next((label for label in name.split(".") if not _LABEL.fullmatch(label)), None)
    return None if bad is None else f"has the label {bad!r}"
