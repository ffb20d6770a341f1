"""Where a blob's bytes come from: the seam a new transport plugs into.

Everything above reads blob bytes only through :class:`BlobSource`: ``pread`` of an exact range, the
size, and an optional hint that a range will be read soon. :class:`LocalFile` serves a file on disk; an
HTTP range reader (a registry blob) would implement the same three members and nothing else changes.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from ..errors import FormatError, UsageError


@runtime_checkable
class BlobSource(Protocol):
    """Random access to the stored bytes of one blob."""

    path: str  # what errors name: a file path, or a URL
    size: int

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        """Exactly ``size`` bytes from ``offset``, or FormatError naming ``what`` and where."""
        ...

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """A hint: ``size`` bytes from ``offset`` (0: all) will be read soon. May do nothing."""
        ...


class LocalFile:
    """A :class:`BlobSource` over a local file, read with pread(2): thread-safe, and unlike an mmap the
    pages read do not stay charged to this process, so streaming a large blob keeps RSS flat."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
        self.size = os.fstat(self.fd).st_size

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(
                what, f"range of {size} bytes lies outside the {self.size}-byte file", offset=offset
            )
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise FormatError(what, f"short read: {len(data)} of {size} bytes (file changed?)", offset=offset)
        return data

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """``POSIX_FADV_WILLNEED``: the kernel starts reading now, so the reads overlap the work before them."""
        try:
            os.posix_fadvise(self.fd, offset, size, os.POSIX_FADV_WILLNEED)
        except (AttributeError, OSError):
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
