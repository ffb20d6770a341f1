"""Output files are written beside their target and renamed into place on success only.

A temporary file is named ``.NAME.nydus-inspect-tmp-<pid>-<random>`` and locked (``flock``) while it is
written. A run killed by SIGKILL cannot remove its own; the next run that writes NAME in that directory
removes those whose writer is gone (its pid no longer exists and nobody holds the lock), and never touches
another program's files or the temporary file of a run still going.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import UsageError

TEMP_MARK = ".nydus-inspect-tmp-"


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file object; on clean exit it replaces ``path``, on error nothing is left behind.

    A target that exists and is not a regular file (``/dev/null``, a FIFO, ``/dev/stdout``) is written
    in place: renaming over it would replace the device node with a file.
    """
    with atomic_outputs([path], mode) as (f,):
        yield f


@contextlib.contextmanager
def atomic_outputs(paths: list[str], mode: int = 0o644) -> Iterator[list[BinaryIO]]:
    """Several outputs that appear together: one file object per path; on clean exit every one of them is
    complete (flushed and closed) before the first is renamed into place, then they are renamed in the
    order of ``paths``. On error none is renamed and every temporary file is removed."""
    temps: list[_Temp] = []
    try:
        for path in paths:
            temps.append(_Temp(path))
        yield [t.file for t in temps]
        for t in temps:
            t.complete(mode)
        for t in temps:
            t.rename()
    finally:
        for t in temps:
            t.discard()


class _Temp:
    """One output being written: a temporary file beside ``path`` (or ``path`` itself when special)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp: str | None = None
        try:
            st = os.stat(path)
            special = not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)
        except OSError:
            special = False
        if special:
            self.file: BinaryIO = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
            return
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"{path}: directory {directory} does not exist")
        base = os.path.basename(path)
        remove_stale(directory, base)
        fd, self.tmp = _create_temp(directory, base)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)

    def complete(self, mode: int) -> None:
        self.file.flush()
        if self.tmp is not None:
            os.chmod(self.tmp, mode)
        self.file.close()

    def rename(self) -> None:
        if self.tmp is not None:
            os.replace(self.tmp, self.path)
            self.tmp = None

    def discard(self) -> None:
        if not self.file.closed:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            self.tmp = None


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def temp_name(base: str, pid: int, tag: str) -> str:
    return f".{base}{TEMP_MARK}{pid}-{tag}"


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    """A new file ``DIR/.BASE.nydus-inspect-tmp-<pid>-<random>``, created exclusively with mode 0600 (what
    ``tempfile.mkstemp`` does; importing tempfile costs a command more start-up time than this), and
    locked for as long as it is open."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tag = "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in os.urandom(8))  # as long as mkstemp's
        tmp = os.path.join(directory, temp_name(base, os.getpid(), tag))
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Another run's clean-up may have taken the file for stale between its creation and the lock.
            if os.stat(tmp, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except OSError:
            pass
        os.close(fd)
    raise FileExistsError(f"no free temporary name in {directory}")


def remove_stale(directory: str, base: str) -> list[str]:
    """Remove the temporary files of ``base`` left in ``directory`` by runs that died; returns their names.

    One is stale when the pid in its name is not a live process and no process holds its lock (the lock
    also covers a writer in another pid namespace sharing the directory)."""
    prefix = f".{base}{TEMP_MARK}"
    removed = []
    try:
        entries = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for name in entries:
        pid_text = name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.unlink(path)
                removed.append(name)
        except OSError:
            pass  # locked: a writer is still at it
        finally:
            os.close(fd)
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
