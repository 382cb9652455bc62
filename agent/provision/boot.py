"""Where a bundle goes: a mounted boot partition, or a FAT image or card read through mtools.

mtools (``mcopy -i IMAGE@@OFFSET``) writes into a FAT file system inside a file or a block
device without mounting it, so provisioning needs no root. A whole-card image (MBR) is
searched for its first FAT partition, which is the boot partition of Raspberry Pi OS.
A target must look like a Raspberry Pi boot partition (config.txt or cmdline.txt at its root),
which keeps a mistyped path from writing keys into the laptop's own EFI partition.

A bundle is written whole or not at all: its files go into ``emotion-agent.part/`` first, which
is renamed to ``emotion-agent/`` only once every file is there. A write that fails (a full card)
removes the partial folder, its private keys with it, so the card holds no bundle and a retry is
not refused; a ``.part`` folder left by a write that was cut off (card pulled) is removed by the
next one. The importer only ever looks at ``emotion-agent/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

from agent.atomic import write_new
from agent.errors import InputError, RuntimeFailure
from agent.provision.bundle import BUNDLE_DIR

PARTIAL_DIR = f"{BUNDLE_DIR}.part"
"""Where a bundle is written before it is renamed to BUNDLE_DIR (complete) or removed (failed)."""
SECTOR = 512
FAT_PARTITION_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
BOOT_MARKERS = ("config.txt", "cmdline.txt")


class BootTarget(Protocol):
    description: str

    def has_bundle(self) -> bool: ...

    def looks_like_boot(self) -> bool: ...

    def write(self, files: list[tuple[str, bytes]], replace: bool) -> None: ...


def fat_offset(head: bytes, where: str) -> int:
    """Byte offset of the FAT file system: 0 for a bare FAT image, else its MBR partition."""
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        raise InputError(
            f"{where}: neither a FAT file system nor a partitioned card image (no boot signature)"
        )
    if head[54:57] == b"FAT" or head[82:87] == b"FAT32":
        return 0
    for i in range(4):
        entry = head[446 + 16 * i : 462 + 16 * i]
        kind = entry[4]
        lba = int.from_bytes(entry[8:12], "little")
        if kind == 0xEE:
            raise InputError(f"{where}: has a GPT partition table; Raspberry Pi OS cards use MBR")
        if kind in FAT_PARTITION_TYPES and lba > 0:
            return lba * SECTOR
    raise InputError(
        f"{where}: no FAT partition in its partition table (a Raspberry Pi OS card has one first)"
    )


class DirTarget:
    """A mounted boot partition (or a staging folder for a batch)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def has_bundle(self) -> bool:
        return (self.root / BUNDLE_DIR).exists()

    def looks_like_boot(self) -> bool:
        return any((self.root / m).is_file() for m in BOOT_MARKERS)

    def write(self, files: list[tuple[str, bytes]], replace: bool) -> None:
        dest, part = self.root / BUNDLE_DIR, self.root / PARTIAL_DIR
        if part.exists():  # left by a write that was cut off
            _shred_tree(part)
        part.mkdir(mode=0o700, parents=True)
        try:
            for name, data in files:
                write_new(part / name, data, 0o600)
            if replace and dest.exists():
                shutil.rmtree(dest)
            part.rename(dest)
        except BaseException:
            _shred_tree(part)
            raise


def _shred_tree(folder: Path) -> None:
    """Overwrite each file of a partial bundle in place (best effort on flash), then remove it."""
    for path in folder.iterdir() if folder.is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                with path.open("r+b") as handle:
                    handle.write(b"\0" * size)
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def _mtools(args: list[str], where: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(args[0])
    if exe is None:
        raise InputError(f"{where}: writing a FAT image needs mtools (`sudo apt install mtools`)")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, env=env, check=False)  # noqa: S603


class FatImageTarget:
    """A FAT file system in an image file or on a card's block device, through mtools."""

    def __init__(self, image: Path) -> None:
        try:
            with image.open("rb") as handle:
                head = handle.read(SECTOR)
        except OSError as exc:
            raise InputError(f"{image}: cannot read the image: {exc.strerror}") from exc
        self.offset = fat_offset(head, str(image))
        self.drive = f"{image}@@{self.offset}" if self.offset else str(image)
        self.description = f"{image} (FAT at byte {self.offset})" if self.offset else f"{image} (FAT image)"

    def _exists(self, name: str) -> bool:
        return _mtools(["mdir", "-i", self.drive, "-b", f"::/{name}"], self.description).returncode == 0

    def has_bundle(self) -> bool:
        return self._exists(BUNDLE_DIR)

    def looks_like_boot(self) -> bool:
        return any(self._exists(m) for m in BOOT_MARKERS)

    def _run(self, args: list[str]) -> None:
        done = _mtools(args, self.description)
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            raise RuntimeFailure(f"{self.description}: {args[0]} failed: {said}")

    def write(self, files: list[tuple[str, bytes]], replace: bool) -> None:
        part = f"::/{PARTIAL_DIR}"
        if self._exists(PARTIAL_DIR):  # left by a write that was cut off
            self._run(["mdeltree", "-i", self.drive, part])
        self._run(["mmd", "-i", self.drive, part])
        try:
            self._copy(files, part)
            if replace and self.has_bundle():
                self._run(["mdeltree", "-i", self.drive, f"::/{BUNDLE_DIR}"])
            self._run(["mmove", "-i", self.drive, part, f"::/{BUNDLE_DIR}"])
        except BaseException:
            _mtools(["mdeltree", "-i", self.drive, part], self.description)  # best effort
            raise

    def _copy(self, files: list[tuple[str, bytes]], folder: str) -> None:
        with tempfile.TemporaryDirectory(prefix="ea-provision-") as tmp:
            staged = []
            for name, data in files:
                path = Path(tmp) / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                staged.append(str(path))
            try:
                self._run(["mcopy", "-i", self.drive, "-o", *staged, f"{folder}/"])
            finally:
                for path_str in staged:
                    size = os.path.getsize(path_str)
                    with open(path_str, "r+b") as handle:
                        handle.write(b"\0" * size)


def open_target(path: Path) -> BootTarget:
    """A folder is a mounted partition; a file or block device is a FAT or card image."""
    if path.is_dir():
        return DirTarget(path)
    if path.exists():
        return FatImageTarget(path)
    raise InputError(f"{path}: no such folder, image file or device")
