"""lmlab.fileio.atomic_open: all or nothing, and durable: the file's data, then the rename, reach the disk."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from lmlab.fileio import atomic_open


def _record_fsyncs_and_replaces(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Events in order: ("fsync", (st_dev, st_ino) of the synced descriptor), ("replace", target name)."""
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    def replace(src, dst) -> None:
        real_replace(src, dst)
        events.append(("replace", os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _identity(path: os.PathLike[str] | str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@pytest.mark.skipif(os.name == "nt", reason="Windows cannot open a directory to sync it")
def test_the_directory_is_synced_after_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "run" / "ck.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    events = _record_fsyncs_and_replaces(monkeypatch)
    with atomic_open(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    file_id, dir_id = _identity(target), _identity(target.parent)
    assert events == [("fsync", file_id), ("replace", os.fspath(target)), ("fsync", dir_id)]


def test_text_mode_and_a_failed_block_leave_no_temporary_file(tmp_path):
    target = tmp_path / "t.json"
    with atomic_open(target, text=True) as f:
        f.write("{}\n")
    assert target.read_text(encoding="utf-8") == "{}\n"
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, text=True) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_no_directory_sync_where_directories_cannot_be_opened(tmp_path, monkeypatch):
    real_open = os.open

    def open_no_directories(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))  # what Windows answers
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_no_directories)
    with atomic_open(tmp_path / "a.bin") as f:
        f.write(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_file_systems_that_cannot_sync_a_directory_are_skipped_quietly(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # what some file systems answer for a directory
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_open(tmp_path / "b.bin") as f:
        f.write(b"y")
    assert (tmp_path / "b.bin").read_bytes() == b"y"
