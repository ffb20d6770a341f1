"""corrupt: make a damaged copy of a layer for negative tests (bit flip, truncation, zeroed range)."""

from __future__ import annotations

import shutil

from .errors import UsageError
from .fsutil import atomic_output


def corrupt(
    src: str,
    dst: str,
    *,
    flip_bit: int | None = None,
    truncate: int | None = None,
    zero_range: tuple[int, int] | None = None,
) -> str:
    """Copy ``src`` to ``dst`` with exactly one kind of damage; returns a description of it.

    ``flip_bit`` is a bit index from the start of the file (byte = N // 8, bit = N % 8);
    ``truncate`` keeps the first N bytes; ``zero_range`` zeroes bytes [A, B).
    """
    if sum(x is not None for x in (flip_bit, truncate, zero_range)) != 1:
        raise UsageError("corrupt needs exactly one of --flip-bit, --truncate, --zero-range")
    try:
        with open(src, "rb") as f:
            size = f.seek(0, 2)
    except OSError as exc:
        raise UsageError(f"{src}: cannot open: {exc.strerror}") from None
    with open(src, "rb") as fin, atomic_output(dst) as fout:
        if truncate is not None:
            if not 0 <= truncate <= size:
                raise UsageError(f"--truncate {truncate}: must be between 0 and the file size {size}")
            _copy(fin, fout, truncate)
            return f"truncated to {truncate} of {size} bytes"
        shutil.copyfileobj(fin, fout, 1 << 20)
        if flip_bit is not None:
            if not 0 <= flip_bit < 8 * size:
                raise UsageError(f"--flip-bit {flip_bit}: must be below {8 * size} (bits in the file)")
            pos = flip_bit // 8
            fin.seek(pos)
            byte = fin.read(1)[0] ^ (1 << (flip_bit % 8))
            fout.seek(pos)
            fout.write(bytes([byte]))
            return f"flipped bit {flip_bit % 8} of byte {pos}"
        start, end = zero_range  # type: ignore[misc]
        if not 0 <= start <= end <= size:
            raise UsageError(f"--zero-range {start}:{end}: must satisfy 0 <= A <= B <= {size}")
        fout.seek(start)
        fout.write(bytes(end - start))
        return f"zeroed bytes [{start}, {end})"


def _copy(fin, fout, n: int) -> None:
    while n:
        block = fin.read(min(n, 1 << 20))
        if not block:
            break
        fout.write(block)
        n -= len(block)


def parse_range(text: str) -> tuple[int, int]:
    try:
        a, b = text.split(":", 1)
        return int(a, 0), int(b, 0)
    except ValueError:
        raise UsageError(f"--zero-range {text!r}: expected A:B (byte offsets)") from None
