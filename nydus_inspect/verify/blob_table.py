"""Checks ``blob.table`` against the blob file: a bootstrap's blob-table entry (features, sizes) against
the blob it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NydusInspectError
from ..formats import blob_meta
from ..formats.tar_header import (
    IMAGE_BLOB,
    IMAGE_BOOT,
)
from ..layer import Layer
from .blob_meta import column_pieces
from .bootstrap import _BLOB
from .findings import Finding, _show

if TYPE_CHECKING:
    from .run import _Run


def _check_blob_entry(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    """The bootstrap's blob-table entry against the blob file it names."""
    if ent is None or blob_index is None:
        return
    base = run.layer.rafs.ext.s_blob_table_offset + blob_index * _BLOB.size

    def bad(fld: str, message: str, expected, found, entry: str | None = None) -> None:
        run.add(
            Finding(
                "blob.table",
                message,
                structure=_BLOB.name,
                file=run.layer.path,
                entry=entry,
                blob_index=blob_index,
                field=fld,
                offset=base + _BLOB.offsets[fld],
                expected=_show(expected),
                found=_show(found),
            )
        )

    try:
        hdr = blob.blob_meta_header
    except NydusInspectError:
        hdr = None
    if hdr is not None and (hdr.s_features ^ ent.features) & ~blob_meta.INLINED_FS_META:
        bad(
            "features",
            "differ from the blob.meta header's (beyond INLINED_FS_META)",
            hex(hdr.s_features),
            hex(ent.features),
        )
    try:
        infos = blob.chunk_infos
    except NydusInspectError:
        infos = None
    if infos is not None and len(infos) == ent.chunk_count:
        # The sum of the 4K-rounded sizes; none when a record does not decode (the chunk pass reports it).
        want = 0
        for _, (_, _, _, usizes, ok) in column_pieces(infos):
            if not all(ok):
                want = None
                break
            want += sum((u + 4095) // 4096 * 4096 for u in usizes)
        if want is not None and ent.uncompressed_size != want:
            bad(
                "uncompressed_size",
                "differs from the sum of the 4K-rounded chunk sizes in blob.meta",
                want,
                ent.uncompressed_size,
            )
    te = blob.toc_entry(IMAGE_BLOB)
    if te is not None and te.uncompressed_size != ent.uncompressed_size:
        bad(
            "uncompressed_size",
            "differs from the ToC's image.blob uncompressed_size",
            te.uncompressed_size,
            ent.uncompressed_size,
            entry=IMAGE_BLOB,
        )
    if ent.features & blob_meta.INLINED_FS_META and not blob.has_entry(IMAGE_BOOT):
        bad(
            "features",
            "INLINED_FS_META, but the blob holds no bootstrap (image.boot)",
            "clear",
            hex(ent.features),
        )
    if ent.features & blob_meta.SEPARATE:
        return
    # compressed_size: the blob's size (non-inline), or where image.boot starts (inline, v2.3), or the end of
    # the chunk data (2022 builders).
    sizes = {blob.size}
    for name, end in ((IMAGE_BOOT, False), (IMAGE_BLOB, True)):
        try:
            if blob.has_entry(name):
                off, size = blob.entry_location(name)[:2]
                sizes.add(off + size if end else off)
        except NydusInspectError:
            pass
    if ent.compressed_size not in sizes:
        bad(
            "compressed_size",
            "is neither the blob's size, where its image.boot starts, nor its chunk data size",
            " or ".join(str(x) for x in sorted(sizes)),
            ent.compressed_size,
        )
