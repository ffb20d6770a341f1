"""A bootstrap layer (a tar or tar.gz holding image/image.boot, as nydus pushes a merged bootstrap): find
its bootstrap without keeping what the scan reads."""

from __future__ import annotations

import io
import mmap
import zlib

from .chunks.source import SliceReader
from .errors import FormatError

#: Bootstrap layers are small tars; refuse to scan more members than this.
MAX_TAR_MEMBERS = 100_000
#: A scan lets the mapped pages behind it go in steps of this many bytes.
_RELEASE_STEP = 8 << 20


def bootstrap_in_tar(buf, size: int, limit: int) -> bytes:
    """The bytes of image/image.boot in a bootstrap layer: a tar or tar.gz of ``size`` bytes at the start of
    ``buf`` (a map, or any bytes-like); a bootstrap of more than ``limit`` bytes is refused."""
    import tarfile  # only bootstrap layers (image/image.boot in a tar) need it

    # Read through slices of the map: tarfile looks at headers and seeks past data, so a big layer tar is
    # neither copied whole (as BytesIO would) nor, when remote, fetched whole.
    reader = SliceReader(buf, size)
    raw = io.BufferedReader(reader, 64 << 10)
    # The pages of the map behind the scan are let go: a tar of small files is mostly headers, and every
    # page read would otherwise stay resident (a hundred MiB for the members a scan reads at most).
    release = buf.madvise if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") else None
    released = 0
    try:
        if buf[:2] == b"\x1f\x8b":
            import gzip

            fobj: io.IOBase = gzip.GzipFile(fileobj=raw)
        else:
            fobj = raw
        # Not stream mode ("r|"): it skips a member's data by reading size/10240 blocks even past the end,
        # so a forged size (GNU base-256 allows 2^95) would spin for ever. Seeking stops at the real end.
        with tarfile.open(fileobj=fobj, mode="r:") as tf:
            count = 0
            while (member := tf.next()) is not None:
                # tarfile keeps every member it has read (a TarInfo of several hundred bytes each): only
                # the one looked for is wanted.
                tf.members.clear()
                if count >= MAX_TAR_MEMBERS:
                    break
                count += 1
                if release is not None and reader.pos - released >= _RELEASE_STEP:
                    upto = (reader.pos - _RELEASE_STEP // 2) // mmap.PAGESIZE * mmap.PAGESIZE
                    if upto > released:
                        release(mmap.MADV_DONTNEED, released, upto - released)
                        released = upto
                if member.name.lstrip("./") == "image/image.boot":
                    if not member.isreg():
                        raise FormatError("bootstrap layer", "image/image.boot is not a regular file")
                    if member.size > limit:
                        raise FormatError(
                            "bootstrap layer",
                            f"image/image.boot larger than {limit >> 30} GiB",
                            value=member.size,
                        )
                    f = tf.extractfile(member)
                    data = f.read() if f else b""
                    if len(data) != member.size:
                        raise FormatError("bootstrap layer", "image/image.boot is truncated", value=len(data))
                    return data
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, OverflowError) as exc:
        # ValueError / OverflowError: tarfile seeking to a forged member size beyond any offset.
        raise FormatError("bootstrap layer", f"not a readable tar or tar.gz: {exc}") from None
    raise FormatError("bootstrap layer", "no image/image.boot in this tar")
