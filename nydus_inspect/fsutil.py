"""Output files are written beside their target and renamed into place on success only."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import UsageError


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file object; on clean exit it replaces ``path``, on error nothing is left behind.

    A target that exists and is not a regular file (``/dev/null``, a FIFO, ``/dev/stdout``) is written
    in place: renaming over it would replace the device node with a file.
    """
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        special = False
    if special:
        with open(path, "wb", buffering=1 << 20) as f:
            yield f
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{path}: directory {directory} does not exist")
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
            f.flush()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    """A new file ``DIR/.BASE.<random>.tmp``, created exclusively with mode 0600 (what ``tempfile.mkstemp``
    does; importing tempfile costs a command more start-up time than this)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tag = "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in os.urandom(8))  # as long as mkstemp's
        tmp = os.path.join(directory, f".{base}.{tag}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")
