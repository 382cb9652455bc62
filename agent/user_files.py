"""Reading a file that a config or command line names: a regular file, of bounded size, opened
without blocking, its permissions checked on the descriptor that is read.

A path can name a FIFO (``open`` waits for a writer forever), a device (``/dev/zero`` never
ends, so reading it whole exhausts memory), a folder, or a huge file. Each is refused with one
line naming the file and what was expected. Secrets (keys, passwords) must also be readable by
their owner only, checked with ``fstat`` on the opened descriptor, so the file checked is the
file read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from agent.errors import InputError

MAX_TEXT_BYTES = 1024 * 1024
"""Default cap for config, site and public key files; each is a few kilobytes."""
MAX_SECRET_BYTES = 64 * 1024
"""Keys, passwords and certificates."""

Access = Literal["owner", "group"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for an ``st_mode`` that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _stat(path: Path, what: str, error: type[InputError], missing_hint: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{missing_hint}") from None
    except OSError as exc:
        raise error(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte: no file has that name
        raise error(f"{str(path)!r}: the {what}'s name contains a NUL byte (\\0); no file name may") from None


def read_user_bytes(
    path: Path,
    what: str,
    error: type[InputError],
    *,
    max_bytes: int = MAX_TEXT_BYTES,
    readable_by: Access | None = None,
    missing_hint: str = "",
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``error`` names the file otherwise.

    ``readable_by="owner"``: no access for group or others (mode & 0o077 == 0), as for the device key.
    ``readable_by="group"``: no access for others (mode & 0o007 == 0): a root-owned file shared with
    the service's group, as provisioning installs the TLS client key (0640 root:emotion-agent).
    """
    before = _stat(path, what, error, missing_hint)  # refuse FIFOs and devices before opening them
    if not stat.S_ISREG(before.st_mode):
        raise error(f"{path}: the {what} must be a regular file, not {file_kind(before.st_mode)}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise error(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped between stat and open
            raise error(f"{path}: the {what} must be a regular file, not {file_kind(info.st_mode)}")
        mode = stat.S_IMODE(info.st_mode)
        if readable_by == "owner" and mode & 0o077:
            raise error(
                f"{path}: {what} has mode {mode:04o}, readable beyond its owner; "
                f"run `chmod 600 {path}` (mode & 0o077 must be 0)"
            )
        if readable_by == "group" and mode & 0o007:
            raise error(
                f"{path}: {what} has mode {mode:04o}, readable by every user; "
                f"run `chmod o-rwx {path}` (mode & 0o007 must be 0)"
            )
        if info.st_size > max_bytes:
            raise error(f"{path}: {info.st_size} bytes is too large for a {what} (at most {max_bytes})")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, max_bytes + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{path}: more than {max_bytes} bytes is too large for a {what}")
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_user_text(
    path: Path, what: str, error: type[InputError], *, max_bytes: int = MAX_TEXT_BYTES,
    readable_by: Access | None = None,
) -> str:
    """``read_user_bytes`` decoded as UTF-8; undecodable text is refused naming the file."""
    data = read_user_bytes(path, what, error, max_bytes=max_bytes, readable_by=readable_by)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: the {what} is not UTF-8 text (byte {exc.start})") from None


def folder_as_named(folder: Path) -> Path:
    """``folder`` made absolute as the kernel reads it, keeping the symbolic links it names: a
    ``..`` climbs out of the folder a link points to (the kernel's reading of ``link/..``), and
    elsewhere it is cut from the text (``os.path.abspath``, which cut ``link/..`` too, so a
    config named ``x/link/../agent.yaml`` had its relative paths read from x, not the file's
    folder). A link that is named, not climbed out of, stays in the path."""
    path = Path("/") if folder.is_absolute() else Path(os.getcwd())
    for part in folder.parts[1 if folder.is_absolute() else 0 :]:
        if part == "..":
            path = (Path(os.path.realpath(path)) if path.is_symlink() else path).parent
        elif part != ".":
            path /= part
    return path
