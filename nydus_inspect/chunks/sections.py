"""A layer's own chunk records: blob.meta's chunk-info array and blob.digest, read and checked.

Both grow with the number of chunks (16 or 24 bytes, and 32 bytes, a chunk): at millions of chunks they are
hundreds of MiB, more than a reader should hold on the heap. So past :data:`SPILL_SECTION` each is checked
against the ToC by streaming it, then read a few pages at a time through :class:`SourceBytes`: where it lies
(an uncompressed entry of a local file) or from an unlinked temporary file it was decoded into.

:func:`decoded_into_file` is that decoding step, which a large compressed bootstrap takes too (the layer maps
the file it writes). The layer is used only through its public entry readers, never imported here: the layer
module imports this one.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from ..codecs import Compressor
from ..errors import FormatError
from ..formats import blob_meta
from ..formats.tar_header import BLOB_DIGEST, BLOB_META
from .source import LocalFile, SourceBytes, Window

if TYPE_CHECKING:
    from ..layer import Layer

#: blob.digest or a chunk-info array larger than this (decoded) is not held on the heap: see the module's
#: docstring. Read when a section is, so that a test can lower it to send small layers down that path.
SPILL_SECTION = 1 << 20


class ChunkSections:
    """blob.meta's chunk-info array and blob.digest of one layer, read on demand (the layer caches what they
    return). Owns the temporary files large sections were decoded into; :meth:`close` closes them, which the
    layer does as it closes: the arrays read from them must not be used after that."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self._files: list[LocalFile] = []

    def close(self) -> None:
        for spilled in self._files:
            spilled.close()
        self._files.clear()

    def infos(self, *, located_by_header: bool = True) -> blob_meta.ChunkInfoArray | None:
        """The chunk-info array, or None for a layer without a blob.meta header. ``located_by_header``:
        whether the header's ci offset and size must be where the blob.meta entry lies (not so for a
        blob.meta file on its own, whose header keeps the offsets in the blob it describes)."""
        layer = self.layer
        hdr = layer.blob_meta_header
        if hdr is None:
            return None
        off, size, _, _, _ = layer.entry_location(BLOB_META)
        if located_by_header and (off != hdr.s_ci_offset or size != hdr.s_ci_compressed_size):
            raise FormatError(
                "blob.meta.header",
                f"ci location {hdr.s_ci_offset}+{hdr.s_ci_compressed_size} differs from the "
                f"blob.meta entry at {off}+{size}",
                field="s_ci_offset",
                offset=off + size,
                value=hdr.s_ci_offset,
            ).located(layer.path)
        # zran and batch blobs keep contexts after the records, parsed from the same bytes: held whole.
        whole = hdr.s_features & (blob_meta.ZRAN | blob_meta.BATCH)
        data = layer.entry(BLOB_META) if whole else self.data(BLOB_META)
        if len(data) != hdr.s_ci_uncompressed_size:
            raise FormatError(
                "blob.meta", "decoded size differs from the header", offset=off, value=len(data)
            ).located(layer.path)
        return blob_meta.ChunkInfoArray(
            data, hdr.s_ci_entries, bool(hdr.s_features & blob_meta.CHUNK_INFO_V2), off
        )

    def digests(self) -> blob_meta.DigestArray | None:
        """blob.digest's digests, one a chunk, or None for a layer without that section."""
        layer = self.layer
        if not layer.has_entry(BLOB_DIGEST):
            return None
        data = self.data(BLOB_DIGEST)
        if len(data) % 32:
            raise FormatError("blob.digest", "size is not a multiple of 32", value=len(data)).located(
                layer.path
            )
        hdr = layer.blob_meta_header
        if hdr is not None and len(data) != 32 * hdr.s_ci_entries:
            raise FormatError(
                "blob.digest",
                f"holds {len(data) // 32} digests for {hdr.s_ci_entries} chunks",
                value=len(data),
            ).located(layer.path)
        return blob_meta.DigestArray(data)

    def data(self, name: str):
        """Entry ``name``'s checked bytes: as bytes when small (or compressed by a codec that is not read in
        pieces, or encrypted); else a :class:`SourceBytes` view, after its sha256 was checked by streaming
        it. The view reads the entry where it lies only in a local file, whose bytes are those just hashed;
        a remote one's later ranges could differ from what was hashed, so its (and any compressed) entry is
        decoded into an unlinked temporary file as it is hashed, and read from there."""
        layer = self.layer
        off, size, comp, usize, _ = layer.entry_location(name)
        if usize < SPILL_SECTION or comp not in (Compressor.NONE, Compressor.ZSTD):
            return layer.entry(name)
        if name == BLOB_META and not layer.meta_in_clear:
            return layer.entry(name)  # decrypted whole: the stored bytes are not the records
        if comp is Compressor.NONE and isinstance(layer.source, LocalFile):
            for _ in layer.iter_entry(name):
                pass  # checked against the ToC after the last piece
            return SourceBytes(Window(layer.source, off, size), name)
        spilled = LocalFile.of_fd(decoded_into_file(layer, name, name), f"{layer.path} ({name}, decoded)")
        self._files.append(spilled)
        return SourceBytes(spilled, name)


def decoded_into_file(layer: Layer, name: str, label: str) -> int:
    """Entry ``name`` of ``layer`` decoded a piece at a time into an unlinked temporary file, checked against
    the ToC after the last piece: its descriptor, the caller's to close. Named, then unlinked at once:
    nothing is left behind, even when the check fails, and it shows in /proc/PID/fd and /proc/PID/maps as
    nydus-inspect-``label``-."""
    fd, tmp = tempfile.mkstemp(prefix=f"nydus-inspect-{label}-")
    os.unlink(tmp)
    try:
        with open(fd, "wb", closefd=False) as f:
            for piece in layer.iter_entry(name, decode_zstd=True):
                f.write(piece)
    except BaseException:
        os.close(fd)
        raise
    return fd
