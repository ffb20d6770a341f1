"""Paths in an image resolved as the kernel resolves them: every symlink on the way is followed.

A user who types ``/bin/bash`` on a usr-merged image means the file ``/usr/bin/bash``; ``/usr/bin/awk``
(a symlink through ``/etc/alternatives``) means the file it ends at. :func:`resolve` walks the path
one component at a time over the model's own lookup (it decodes nothing itself): a symlink met on the
way is replaced by its target (absolute targets restart at the root, relative ones go on from the
link's directory), ``..`` goes up from the directory actually reached (as in the kernel, not
textually), and ``..`` at the root stays there. More than :data:`MAX_SYMLINKS` links in one walk is
``ELOOP``, as in Linux. The last component is followed too unless ``follow=False`` (``-P``,
``--no-dereference``), which names the link itself; a trailing slash always follows, as it does in
Linux.

Every command, helper and screen that takes a path in an image goes through here, so they all agree.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from .model import Node

#: Symlinks followed in one resolution before giving up: Linux's MAXSYMLINKS.
MAX_SYMLINKS = 40

_SYMLINK, _DIR = "symlink", "dir"  # the model's node type names


class PathError(UsageError):
    """A path that does not lead to a node: missing, through a non-directory, or a symlink loop."""

    def __init__(self, message: str, path: str, errno_: int) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno_  # what the kernel would say: ENOENT, ENOTDIR or ELOOP


def resolve(lookup: Callable[[bytes], Node], path: bytes | str, *, follow: bool = True) -> Node:
    """The node ``path`` names, following symlinks; ``lookup(abs_path)`` is the model's lookup of a
    path with no symlink in it (``RafsV6.lookup``), raising FileNotFoundError or NotADirectoryError.

    Raises :class:`PathError` naming the path asked and the part that failed.
    """
    asked = path if isinstance(path, str) else os.fsdecode(path)
    raw = os.fsencode(path) if isinstance(path, str) else bytes(path)
    if not raw:
        raise PathError("an empty path names nothing in the image", asked, errno.ENOENT)
    pending = raw.split(b"/")
    pending.reverse()  # a stack: the next component is at the end
    # A trailing slash (or "/.") asks for a directory: the last symlink is followed whatever ``follow`` says.
    follow_last = follow or raw.endswith(b"/") or raw.endswith(b"/.") or raw.endswith(b"/..")
    done: list[bytes] = []  # the components reached so far: a path with no symlink in it
    links = 0
    node = lookup(b"/")
    while pending:
        part = pending.pop()
        if not part:
            continue
        if node.type != _DIR:  # also for "." and "..": the kernel refuses to go through a non-directory
            raise _not_dir(asked, done)
        if part == b".":
            continue
        if part == b"..":
            if done:
                done.pop()
                node = lookup(_join(done))
            continue
        here = _join([*done, part])
        try:
            node = lookup(here)
        except FileNotFoundError:
            raise PathError(
                f"no such path in the image: {asked} ({os.fsdecode(here)} does not exist)",
                asked,
                errno.ENOENT,
            ) from None
        except NotADirectoryError:
            raise _not_dir(asked, done) from None
        last = not any(p not in (b"", b".") for p in pending)
        if node.type == _SYMLINK and (not last or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathError(
                    f"{asked}: too many levels of symbolic links (more than {MAX_SYMLINKS}, at {os.fsdecode(here)})",
                    asked,
                    errno.ELOOP,
                )
            target = node.target or b""
            if not target:
                raise PathError(
                    f"no such path in the image: {asked} ({os.fsdecode(here)} is an empty symlink)",
                    asked,
                    errno.ENOENT,
                )
            if target.startswith(b"/"):
                done = []
            node = lookup(_join(done))
            parts = target.split(b"/")
            parts.reverse()
            pending.extend(parts)
            continue
        done.append(part)
    if raw.endswith(b"/") and node.type != _DIR:
        raise _not_dir(asked, done)
    return node


def resolve_in(rafs, path: bytes | str, *, follow: bool = True) -> Node:
    """:func:`resolve` over a RAFS reader (anything with ``lookup(path) -> Node``)."""
    return resolve(rafs.lookup, path, follow=follow)


def _not_dir(asked: str, done: list[bytes]) -> PathError:
    where = os.fsdecode(_join(done))
    return PathError(f"no such path in the image: {asked} ({where} is not a directory)", asked, errno.ENOTDIR)


def _join(parts: list[bytes]) -> bytes:
    return b"/" + b"/".join(parts)


__all__ = ["MAX_SYMLINKS", "PathError", "resolve", "resolve_in"]
