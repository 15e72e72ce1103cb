"""Writing files atomically, so that a crash never leaves a half-written file where a good one was."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open"]

# errors of fsync on a directory that only say the file system or platform does not support it
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, getattr(errno, "ENOTSUP", errno.EINVAL)}


def _fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries to disk, so that a rename inside it survives a power loss.

    Skipped quietly where directories cannot be opened (Windows) or the file system cannot sync them.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows: a directory cannot be opened as a file
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, text: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it replaces ``path`` in one step.

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` always holds either the previous complete
    file or the new one. The file's data is synced to disk before the rename, and the directory after it
    (where the platform can sync a directory), so that after a crash or power loss ``path`` holds the new
    file once ``atomic_open`` has returned. If the block raises, the temporary file is deleted and ``path``
    is left as it was. The file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "x" if text else "xb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
