#!/usr/bin/python3
"""A stand-in for systemctl and journalctl inside a test root that runs no systemd.

Installed as ``systemctl`` and ``journalctl`` (argv[0] picks which) by
tests/deploy/test_installing_doc.py. ``start``/``restart`` read the real unit file: its
ConditionPathExists= lines, ExecStartPre=, then ExecStart= as User=/Group=/SupplementaryGroups=
with LoadCredential= copied into a credentials folder; Type=oneshot units run to the end,
others in the background, and Type=notify ones must send READY=1 before start returns (a
process that exits first fails the start, as systemd says). Output goes to
/var/log/fake-journal/UNIT.log, which ``journalctl -u UNIT`` prints. ``enable``, ``disable``
and ``daemon-reload`` go to the real systemctl (offline: it edits the unit links).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

UNIT_DIRS = [Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")]
JOURNAL = Path("/var/log/fake-journal")
RUN = Path("/run/fake-systemd")


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def read_unit(name: str) -> dict[str, list[str]]:
    for folder in UNIT_DIRS:
        path = folder / name
        if path.is_file():
            out: dict[str, list[str]] = {}
            for line in path.read_text().splitlines():
                if "=" in line and not line.startswith(("#", ";", "[")):
                    key, value = line.split("=", 1)
                    out.setdefault(key.strip(), []).append(value.strip())
            return out
    sys.exit(f"Failed to start {name}: Unit {name} not found.")


def pid_of(name: str) -> int | None:
    try:
        pid = int((RUN / f"{name}.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def conditions_met(unit: dict[str, list[str]]) -> bool:
    for cond in unit.get("ConditionPathExists", []):
        negate = cond.startswith("!")
        if Path(cond.lstrip("!")).exists() == negate:
            return False
    return True


def user_prefix(unit: dict[str, list[str]]) -> list[str]:
    user = unit.get("User", [""])[-1]
    if not user:
        return []
    group = unit.get("Group", [user])[-1]
    extra = " ".join(unit.get("SupplementaryGroups", [])).split()
    groups = ["--groups", ",".join(extra)] if extra else ["--clear-groups"]
    return ["setpriv", f"--reuid={user}", f"--regid={group}", *groups]


def credentials(name: str, unit: dict[str, list[str]]) -> dict[str, str]:
    loads = unit.get("LoadCredential", [])
    if not loads:
        return {}
    folder = Path("/run/credentials") / name
    folder.mkdir(parents=True, exist_ok=True)
    user = unit.get("User", ["root"])[-1]
    for spec in loads:
        cred, source = spec.split(":", 1)
        target = folder / cred
        target.write_bytes(Path(source).read_bytes())
        target.chmod(0o400)
        subprocess.run(["chown", user, str(target)], check=True)
    subprocess.run(["chown", user, str(folder)], check=True)
    folder.chmod(0o500)
    return {"CREDENTIALS_DIRECTORY": str(folder)}


FAILED = "Job for {0} failed because the control process exited with error code."


def start(name: str) -> int:
    unit = read_unit(name)
    if pid_of(name) is not None or not conditions_met(unit):
        return 0  # running already, or skipped by a condition: systemd's start succeeds either way
    JOURNAL.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    with (JOURNAL / f"{name}.log").open("ab") as log:
        for pre in unit.get("ExecStartPre", []):
            subprocess.run(shlex.split(pre.lstrip("-")), stdout=log, stderr=log, check=False)
        env = {**os.environ, **credentials(name, unit)}
        if unit.get("Type", ["simple"])[-1] == "oneshot":
            return oneshot(name, unit, env, log)
        return background(name, unit, env, log)


def oneshot(name: str, unit: dict[str, list[str]], env: dict[str, str], log: IO[bytes]) -> int:
    for command in unit.get("ExecStart", []):
        argv = [*user_prefix(unit), *shlex.split(command)]
        if subprocess.run(argv, stdout=log, stderr=log, env=env, check=False).returncode != 0:
            print(FAILED.format(name), file=sys.stderr)
            return 1
    return 0


def background(name: str, unit: dict[str, list[str]], env: dict[str, str], log: IO[bytes]) -> int:
    """Start ExecStart= in its own session; for Type=notify, wait for READY=1 as systemctl does."""
    (command,) = unit.get("ExecStart", [])
    ready = None
    if unit.get("Type", ["simple"])[-1] == "notify":
        address = str(RUN / f"{name}.notify")
        Path(address).unlink(missing_ok=True)
        ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ready.bind(address)
        Path(address).chmod(0o666)  # as systemd's: services send from their own user
        ready.settimeout(0.2)
        env["NOTIFY_SOCKET"] = address
    proc = subprocess.Popen([*user_prefix(unit), *shlex.split(command)], stdout=log, stderr=log, env=env,
                            start_new_session=True, cwd="/")
    (RUN / f"{name}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while ready is not None and time.monotonic() < deadline:
        if proc.poll() is not None:
            print(FAILED.format(name), f'See "journalctl -u {name}" for details.', file=sys.stderr)
            return 1
        try:
            if b"READY=1" in ready.recv(4096):
                return 0
        except TimeoutError:
            continue
    return 0 if ready is None else 1


def stop(name: str) -> int:
    pid = pid_of(name)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
    (RUN / f"{name}.pid").unlink(missing_ok=True)
    return 0


def status(name: str) -> int:
    active = pid_of(name) is not None
    print(f"● {name}\n     Active: {'active (running)' if active else 'inactive (dead)'}")
    journal(["-u", name, "-n", "10"])
    return 0 if active else 3


def journal(args: list[str]) -> int:
    names = [unit_name(args[i + 1]) for i, a in enumerate(args) if a == "-u"]
    lines = 0
    if "-n" in args:
        lines = int(args[args.index("-n") + 1])
    for name in names:
        path = JOURNAL / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.is_file() else []
        print("\n".join(text[-lines:] if lines else text))
    return 0


def systemctl(args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    verb, names = words[0], [unit_name(n) for n in words[1:]]
    if verb in ("enable", "disable", "daemon-reload", "is-enabled"):
        rc = subprocess.run(["/usr/bin/systemctl", *args], env={**os.environ, "SYSTEMD_OFFLINE": "1"},
                            check=False).returncode
        if "--now" in args:
            for name in names:
                (start if verb == "enable" else stop)(name)
        return rc
    if verb == "start":
        return max((start(n) for n in names), default=0)
    if verb == "stop":
        return max((stop(n) for n in names), default=0)
    if verb == "restart":
        return max((stop(n) or start(n) for n in names), default=0)
    if verb == "is-active":
        return 0 if all(pid_of(n) is not None for n in names) else 3
    if verb == "status":
        return max((status(n) for n in names), default=0)
    sys.exit(f"fake systemctl: {verb} is not emulated")


if __name__ == "__main__":
    if Path(sys.argv[0]).name == "journalctl":
        sys.exit(journal(sys.argv[1:]))
    sys.exit(systemctl(sys.argv[1:]))
