"""agent.atomic: the one implementation of durable state writes (audit, signer, DP, verifier)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.atomic import append_durable, fsync_dir, write_atomic, write_new


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_replaces_the_content_with_the_exact_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new", mode=0o640)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o640
    write_atomic(target, b"newer")
    assert mode_of(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_stale_temp_file_from_a_crash_is_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    stale = tmp_path / "state.json.tmp"
    stale.write_bytes(b"a much longer torn write from before the crash")
    stale.chmod(0o666)
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert mode_of(target) == 0o600
    assert not stale.exists()


def test_the_file_is_synced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "s", b"x")
    assert calls == ["fsync file", "rename", "fsync dir"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_new_never_overwrites_nor_follows_a_link(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    write_new(key, b"secret")
    assert key.read_bytes() == b"secret"
    assert mode_of(key) == 0o600
    with pytest.raises(FileExistsError):
        write_new(key, b"other")
    assert key.read_bytes() == b"secret"
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "link", b"x")
    assert not elsewhere.exists()
    write_new(tmp_path / "public.jwk", b"{}", 0o644)
    assert mode_of(tmp_path / "public.jwk") == 0o644


def test_append_durable_writes_everything_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "segment.jsonl"
    log.write_bytes(b"first\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        append_durable(fd, b"second\n" * 100_000)
    finally:
        os.close(fd)
    fsync_dir(tmp_path)
    assert log.read_bytes() == b"first\n" + b"second\n" * 100_000


def test_a_symlink_planted_at_the_temp_path_is_replaced_never_written_through(tmp_path: Path) -> None:
    """Whoever can write the folder must not make a state write clobber another file."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    missing = tmp_path / "created-through-a-dangling-link"
    target = tmp_path / "state.json"
    for points_at in (victim, missing):
        (tmp_path / "state.json.tmp").symlink_to(points_at)
        write_atomic(target, b"new")
        assert victim.read_bytes() == b"precious"
        assert mode_of(victim) == 0o644
        assert not missing.exists()
        assert not target.is_symlink()
        assert target.read_bytes() == b"new"
        assert not (tmp_path / "state.json.tmp").is_symlink()
