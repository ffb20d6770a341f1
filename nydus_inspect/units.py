"""Sizes as users write them on the command line: ``256M``, ``1G``, ``64KiB``, ``0x100000``, ``65536``."""

from __future__ import annotations

from .errors import UsageError


def parse_size(text: str, what: str = "size") -> int:
    """``256M``, ``1G``, ``1MiB``, ``512K`` (binary units, as ``--cache-size`` always took them), plain or
    ``0x`` numbers -> bytes. ``what`` names the option in the error (``--chunk-size``)."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        value = float(int(t, 0)) if t[:2] in ("0X", "0O", "0B") else float(t)
    except ValueError:
        raise UsageError(
            f"{what}: cannot read {text!r} (write e.g. 1M, 256M, 1G, 0x100000 or 65536)"
        ) from None
    if value < 0:
        raise UsageError(f"{what}: {text!r} is negative")
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{what}: {text!r} is not a size")
    return int(value * mult)
