"""A throw-away copy of this machine's root: an overlay over ``/`` entered with chroot.

Writes land in ``upper`` and vanish with it, so tools/install can run live (users made by
systemd-sysusers, files under /etc and /opt) without touching the machine. Each command runs in
its own private mount namespace (``unshare --mount``); the overlay is mounted again each time
from the same upper folder. systemctl inside a chroot only edits unit links (it says "Running
in chroot, ignoring request" for the rest), which is what a machine without systemd offers.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path


class OverlayRoot:
    def __init__(self, base: Path, image: Path | None = None) -> None:
        """``image``: a folder laid over / first (a golden image's files; copied, since an overlay
        cannot stack a folder of / on / itself)."""
        self.upper, self.work, self.merged = base / "upper", base / "work", base / "merged"
        for d in (self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        if image is not None:
            shutil.copytree(image, self.upper, symlinks=True)
        self.upper.mkdir(exist_ok=True)

    def _script(self, command: str, env: dict[str, str]) -> str:
        m = shlex.quote(str(self.merged))
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return (
            "set -e; "
            f"mount -t overlay overlay -o lowerdir=/,upperdir={self.upper},workdir={self.work} {m}; "
            f"mount -t proc proc {m}/proc; mount --rbind /dev {m}/dev; mount --rbind /sys {m}/sys; "
            f"exec chroot {m} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "
            f"{exports} /bin/sh -c {shlex.quote(command)}"
        )

    def argv(self, command: str, env: dict[str, str] | None = None) -> list[str]:
        script = self._script(command, env or {})
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def run(self, command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.argv(command, env)
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)

    def path(self, inside: str) -> Path:
        """Where a file written inside the root is kept (the upper layer)."""
        return self.upper / inside.lstrip("/")
