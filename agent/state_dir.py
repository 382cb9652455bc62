"""``state_dir``: the one folder the agent writes (spool, audit log, counters), kept its own.

Checked twice. When the config loads, the path alone (``path_problem``): it must not be ``/``
or a system folder such as ``/etc`` or ``/var``, where the agent would
scatter ``audit/`` and its counters among the system's files. When the service starts, the
folder itself (``prepare``, following a symbolic link): created with mode 0700 when missing;
refused when it is a file or belongs to another user; set to 0700 (with a warning) when it is
ours but open to others.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from agent.errors import ConfigError
from agent.user_files import file_kind

logger = logging.getLogger(__name__)

SYSTEM_FOLDERS = frozenset(
    {
        "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt",
        "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/usr/bin", "/usr/lib",
        "/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/cache", "/var/lib", "/var/log",
        "/var/run", "/var/spool",
        "/tmp", "/var/tmp",  # noqa: S108 - listed to be refused, never used
    }
)
"""Folders the system owns; a subfolder (``/var/lib/emotion-agent``) is what is meant."""
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
"""Not storage at all: nothing below them may be the state folder."""


def path_problem(path: Path, example: str = "/var/lib/emotion-agent") -> str | None:
    """Why ``path`` cannot be the state folder, judged on its name alone; None when it can. A
    config file's relative state_dir arrives joined to the file's folder; one still relative
    (config text read without a file) is judged against the working folder, as it would be used.
    ``example``: the folder to suggest (the fleet receiver's differs)."""
    norm = os.path.abspath(path)  # normalises .. without touching the disk
    norm = "/" + norm.lstrip("/")  # POSIX keeps a leading //
    if norm in SYSTEM_FOLDERS:
        return (
            f"{norm} is a system folder; give it a folder of its own (e.g. {example})"
        )
    if any(norm.startswith(p + "/") for p in PSEUDO_FILESYSTEMS):
        return f"{norm} is under /{norm.split('/')[1]}, which holds no files"
    return None


def check(path: Path, *, uid: int | None = None) -> os.stat_result | None:
    """The folder's stat when it exists and is usable as is or after a chmod; None when missing.

    ConfigError naming ``state_dir`` when it is not a folder or not the service user's."""
    uid = os.geteuid() if uid is None else uid
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"state_dir {path}: cannot inspect it: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte: no folder has that name
        raise ConfigError(f"state_dir {str(path)!r}: contains a NUL byte (\\0); no folder name may") from None
    if not stat.S_ISDIR(info.st_mode):
        kind = "a file" if stat.S_ISREG(info.st_mode) else file_kind(info.st_mode)
        raise ConfigError(f"state_dir {path}: is {kind}, not a folder")
    if info.st_uid != uid:
        raise ConfigError(
            f"state_dir {path}: belongs to {user_named(info.st_uid)}, not to {user_named(uid)}, "
            "the user this command runs as; if the folder's owner is the service user (as systemd's "
            "StateDirectory= makes it), run the command as that user (docs/installing.md, section 7), "
            f"else give it the folder: `chown -R <service user> {path}`"
        )
    return info


def user_named(uid: int) -> str:
    """``emotion-agent (uid 994)``, or ``uid 994`` for a uid the user database does not know."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def prepare(path: Path, *, uid: int | None = None) -> Path:
    """Make sure ``path`` is a folder only the service user (``uid``, default ours) can use."""
    info = check(path, uid=uid)
    if info is None:
        try:
            path.mkdir(mode=0o700, parents=True)
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise ConfigError(f"state_dir {path}: cannot create the folder: {exc.strerror or exc}") from None
        return path
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise ConfigError(
                f"state_dir {path}: has mode {mode:04o} and cannot be set to 0700: {exc.strerror or exc}"
            ) from None
        logger.warning("state_dir %s had mode %04o; set to 0700 (only the service user uses it)", path, mode)
    return path
