"""The one exception hierarchy of nydus-inspect.

Every error a user can cause (bad input, bad arguments, a failed check) is a
``NydusInspectError``; front ends print its message on one line and exit 2 (or
1 for a failed verification). Anything else reaching a front end is a bug.
"""

from __future__ import annotations

#: What a message shows of a value (a name, a path, a target) that may be any length.
SHOWN = 200


def cut(text: str, limit: int = SHOWN) -> str:
    """``text``, or its first ``limit`` characters with an ellipsis and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class NydusInspectError(Exception):
    """Base class of every error nydus-inspect raises on purpose."""

    exit_code = 2


class FormatError(NydusInspectError):
    """Bytes that do not follow the nydus format.

    The message names the structure, the field, the absolute offset and the
    bad value, so a user can find the spot with a hex dump.
    """

    def __init__(
        self,
        structure: str,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        value: object = None,
        where: str | None = None,
    ) -> None:
        super().__init__(structure, message)
        self.structure = structure
        self.detail = message
        self.field = field
        self.offset = offset
        self.value = value
        self.where = where

    def __str__(self) -> str:
        head = self.structure
        if self.field is not None:
            head += f" field {self.field}"
        if self.offset is not None:
            head += f" at offset {self.offset}"
        text = f"{head}: {self.detail}"
        if self.value is not None:
            shown = self.value
            if isinstance(shown, int) and not isinstance(shown, bool):
                shown = f"{shown:#x}"
            elif isinstance(shown, bytes | bytearray):
                shown = repr(bytes(shown[:32]))
            else:
                shown = cut(str(shown))  # a path of a deep tree can be megabytes long
            text += f" (found {shown})"
        return f"{self.where}: {text}" if self.where else text

    def located(self, where: str) -> FormatError:
        """Name the file the bad bytes came from (kept if one is named already)."""
        if self.where is None:
            self.where = where
        return self


class UsageError(NydusInspectError):
    """Arguments that cannot work (a missing file, an unknown entry name...)."""


class VerifyError(NydusInspectError):
    """A check over well-formed bytes failed (digest mismatch, differing trees)."""

    exit_code = 1
