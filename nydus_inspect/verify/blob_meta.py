"""Checks ``blob_meta`` and ``chunk.layout``: the blob.meta header against the ToC, the blob table and
blob.digest; its chunk-info records in write order.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..codecs import Compressor
from ..errors import NydusInspectError
from ..formats import blob_meta
from ..formats.tar_header import (
    BLOB_DIGEST,
    BLOB_META,
    BLOB_META_HEADER,
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_META, Layer
from .bootstrap import _NOT_TILED
from .findings import Finding, _exc_finding

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- blob.meta
def _check_blob_meta(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    run.tick("blob.meta", 0, 1)
    try:
        hdr = blob.blob_meta_header
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META_HEADER, blob_index=blob_index, file=blob.path))
        return
    if hdr is None:
        if blob.has_entry(IMAGE_BLOB):
            run.report.notes.append(
                f"{blob.name}: no blob.meta; chunks are checked from the bootstrap chunk table"
            )
        return
    run.count("blob.meta headers")

    def bad(
        message: str,
        field_name: str,
        expected: object,
        found: object,
        structure: str = "blob.meta.header",
        entry: str = BLOB_META_HEADER,
    ) -> None:
        run.add(
            Finding(
                "blob_meta",
                message,
                structure=structure,
                file=blob.path,
                entry=entry,
                blob_index=blob_index,
                field=field_name,
                expected=str(expected),
                found=str(found),
            )
        )

    try:
        off, size, comp, usize, _ = blob.entry_location(BLOB_META)
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META, blob_index=blob_index, file=blob.path))
        return
    # A blob.meta file on its own keeps the header of the blob it came from: its offset, and (the cache-file
    # form, stored uncompressed) its stored size, describe that blob, not this file.
    apart = blob.kind == KIND_BLOB_META
    if hdr.s_ci_offset != off and not apart:
        bad("chunk-info offset differs from the blob.meta entry", "s_ci_offset", off, hdr.s_ci_offset)
    if hdr.s_ci_compressed_size != size and not apart:
        bad(
            "chunk-info stored size differs from the blob.meta entry",
            "s_ci_compressed_size",
            size,
            hdr.s_ci_compressed_size,
        )
    if usize >= 0 and hdr.s_ci_uncompressed_size != usize:
        bad(
            "chunk-info size differs from the blob.meta entry",
            "s_ci_uncompressed_size",
            usize,
            hdr.s_ci_uncompressed_size,
        )
    try:
        hdr_comp = Compressor.from_algo(hdr.s_ci_compressor)
    except ValueError:
        hdr_comp = None
    if blob.toc is not None and hdr_comp is not None and hdr_comp is not comp:
        bad("chunk-info compressor differs from the ToC's", "s_ci_compressor", comp.value, hdr_comp.value)
    hoff = blob.entry_location(BLOB_META_HEADER)[0]
    if blob.toc is not None and hoff != off + size:
        bad(
            "header does not follow the chunk-info array",
            "s_ci_offset",
            off + size,
            hoff,
            structure="rafs.blob.toc",
        )
    if ent is not None:
        for name, mine, theirs in (
            ("ci_offset", hdr.s_ci_offset, ent.ci_offset),
            ("ci_compressed_size", hdr.s_ci_compressed_size, ent.ci_compressed_size),
            ("ci_uncompressed_size", hdr.s_ci_uncompressed_size, ent.ci_uncompressed_size),
            ("ci_compressor", hdr.s_ci_compressor, ent.ci_compressor),
            ("chunk_count", hdr.s_ci_entries, ent.chunk_count),
        ):
            if mine != theirs:
                run.add(
                    Finding(
                        "blob_meta",
                        f"blob table {name} differs from the blob.meta header",
                        structure="rafs v6 blob table",
                        file=run.layer.path,
                        blob_index=blob_index,
                        field=name,
                        expected=str(mine),
                        found=str(theirs),
                    )
                )
    try:
        infos = blob.chunk_infos
        if infos is not None and len(infos) != hdr.s_ci_entries:
            bad(
                "chunk-info array length differs from the header",
                "s_ci_entries",
                hdr.s_ci_entries,
                len(infos),
            )
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META, blob_index=blob_index, file=blob.path))
    if blob.has_entry(BLOB_DIGEST):
        try:
            digests = blob.chunk_digests
            if digests is not None and len(digests) != hdr.s_ci_entries:
                bad(
                    "blob.digest count differs from the chunk count",
                    "s_ci_entries",
                    hdr.s_ci_entries,
                    len(digests),
                    structure="blob.digest",
                    entry=BLOB_DIGEST,
                )
        except NydusInspectError as exc:
            run.add(_exc_finding("blob_meta", exc, entry=BLOB_DIGEST, blob_index=blob_index, file=blob.path))
    run.tick("blob.meta", 1, 1)


def _check_chunk_layout(run: _Run, blob: Layer, blob_index: int | None) -> None:
    """blob.meta records in write order: compressed data tiles image.blob, uncompressed offsets increase."""
    try:
        infos = blob.chunk_infos
        hdr = blob.blob_meta_header
    except NydusInspectError:
        return  # reported by the blob.meta pass
    if infos is None or hdr is None:
        return
    data_end = None
    if blob.has_entry(IMAGE_BLOB):
        data_end = blob.entry_location(IMAGE_BLOB)[1]
    tiled = data_end is not None and not hdr.s_features & _NOT_TILED

    def bad(index: int, offset: int, message: str, expected, found) -> None:
        owners = run.owners(blob_index, index)
        run.add(
            Finding(
                "chunk.layout",
                message,
                structure="chunk",
                file=blob.path,
                blob_index=blob_index,
                chunk=index,
                offset=offset,
                paths=owners,
                path=owners[0] if owners else None,
                expected=str(expected),
                found=str(found),
            )
        )

    expect = 0
    prev = prev_off = -1
    floor = 0
    for first, (coffs, csizes, uoffs, usizes, ok) in column_pieces(infos):
        for k in range(len(coffs)):
            if not ok[k]:
                continue  # unknown v2 flags: the chunk pass reports it
            i = first + k
            coff = coffs[k]
            if tiled and coff != expect:
                what = "a gap before it" if coff > expect else "overlaps the chunk before it"
                bad(i, coff, f"compressed data not contiguous in write order: {what}", expect, coff)
            expect = coff + csizes[k]
            if prev >= 0 and uoffs[k] < floor:
                bad(
                    i,
                    coff,
                    f"uncompressed offset not after chunk {prev}'s data (offsets increase in write order)",
                    f">= {floor}",
                    uoffs[k],
                )
            prev, prev_off = i, coff
            floor = uoffs[k] + (usizes[k] + 4095) // 4096 * 4096
    if tiled and prev >= 0 and expect != data_end:
        bad(prev, prev_off, "chunk data does not end where image.blob does", data_end, expect)


#: Chunk-info records decoded at a time into columns: the columns of every chunk at once were 33 bytes a
#: chunk, hundreds of MiB at ten million.
COLUMN_PIECE = 1 << 14


def column_pieces(infos) -> Iterator[tuple[int, tuple[array, array, array, array, array]]]:
    """A blob.meta chunk-info array's records a piece at a time, as (index of the piece's first record,
    (compressed offsets, compressed sizes, uncompressed offsets, uncompressed sizes, whether each record
    decodes (v2: no unknown flag bits))): the arithmetic of ``blob_meta.decode_v1`` / ``decode_v2`` without
    building a record object per chunk."""
    rs = infos.record_size
    width = 3 if infos.v2 else 2  # v2 records carry a third word (the chunk's data), unused here
    for first in range(0, infos.count, COLUMN_PIECE):
        n = min(COLUMN_PIECE, infos.count - first)
        flat = array("Q")
        flat.frombytes(infos.data[first * rs : (first + n) * rs])
        if sys.byteorder != "little":
            flat.byteswap()
        us, cs = flat[0::width], flat[1::width]
        if infos.v2:
            cols = (
                array("Q", [c & 0xFF_FFFF_FFFF for c in cs]),
                array("Q", [c >> 40 for c in cs]),
                array("Q", [(u & 0xFFFFFFFF) << 12 for u in us]),
                array("Q", [((u >> 32) & 0xFFFFFF) + 1 for u in us]),
                array("B", [not (u >> 56) & ~blob_meta.CI_KNOWN for u in us]),
            )
        else:
            cols = (
                array("Q", [c & 0xFF_FFFF_FFFF for c in cs]),
                array("Q", [((((c >> 40) & 0xF) << 20) | ((c >> 44) & 0xFFFFF)) + 1 for c in cs]),
                array("Q", [u & blob_meta.V1_UNCOMPRESSED_OFFSET for u in us]),
                array("Q", [((((u >> 8) & 0xF) << 20) | ((u >> 44) & 0xFFFFF)) + 1 for u in us]),
                array("B", bytes([1]) * n),
            )
        yield first, cols
