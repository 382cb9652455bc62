"""Base class of every config section, kept apart so subsystems can define their own sections
(``agent/<package>/settings.py``) without importing the whole config module; and the checks
sections share (a NUL byte in any value, a broker host name, where a relative path leads)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator


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
        user = value.parts[0][1:] or "pi"
        example = Path("/home", user, *value.parts[1:])
        return (
            f"starts with ~, which is not expanded (found {str(value)!r}); "
            f"write the full path, e.g. {example}"
        )
    return None


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
