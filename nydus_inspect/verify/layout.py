"""Checks ``tar.header``, ``toc.format`` and ``blob.layout``: a blob's sections, their tar headers and
the ToC's format, against each other and the blob.meta features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..codecs import Compressor
from ..errors import FormatError, NydusInspectError
from ..formats import blob_meta, tar_header, toc
from ..formats.tar_header import (
    BLOB_DIGEST,
    BLOB_META,
    BLOB_META_HEADER,
    IMAGE_BLOB,
    IMAGE_BOOT,
    RAFS_BLOB_TOC,
)
from ..layer import ENTRY_NAMES, KIND_BLOB_NO_TOC, KIND_BLOB_TOC, SECTION_NAMES, Layer
from .findings import Finding, _exc_finding

if TYPE_CHECKING:
    from .run import _Run


def _entry_before(blob: Layer, offset: int | None) -> str | None:
    """The ToC entry whose data ends right before the tar header at ``offset`` (for naming a bad header)."""
    if offset is None or blob.toc is None:
        return None
    hdr = offset
    for e in blob.toc:
        start = 0 if e.name == IMAGE_BLOB else e.compressed_offset
        end = start + e.compressed_size
        if e.name == BLOB_META:
            continue
        if end <= hdr < end + 512:
            return BLOB_META if e.name == BLOB_META_HEADER else e.name
    toc_start = blob.size - 512 - len(blob.toc_bytes)
    if toc_start + len(blob.toc_bytes) <= hdr:
        return RAFS_BLOB_TOC
    return None


def _check_layout(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    """Tar headers, the ToC's own format, and which sections a blob holds against its features."""
    if blob.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
        return
    try:
        sections = blob.sections
    except FormatError as exc:
        run.add(
            _exc_finding(
                "tar.header",
                exc,
                file=blob.path,
                blob_index=blob_index,
                entry=_entry_before(blob, exc.offset),
            )
        )
        sections = None
    names = [sec.name for sec in sections or ()]
    for sec in sections or ():
        raw = blob.pread(sec.header_offset, 512, f"{sec.name} tar header")
        try:
            want = tar_header.build(sec.name, sec.size)
        except ValueError:
            want = None
        if sec.name not in SECTION_NAMES:
            run.add(
                Finding(
                    "tar.header",
                    "unknown section name",
                    structure=f"{sec.name} tar header",
                    file=blob.path,
                    blob_index=blob_index,
                    offset=sec.header_offset,
                    expected=" / ".join(SECTION_NAMES),
                    found=sec.name,
                )
            )
        elif raw != want:
            i = next(k for k in range(512) if raw[k] != want[k])
            run.add(
                Finding(
                    "tar.header",
                    "differs from the header nydus writes for this name and size",
                    structure=f"{sec.name} tar header",
                    file=blob.path,
                    entry=sec.name,
                    blob_index=blob_index,
                    offset=sec.header_offset + i,
                    expected=want[i : i + 8].hex(),
                    found=raw[i : i + 8].hex(),
                )
            )
    known = [n for n in names if n in SECTION_NAMES]
    if len(set(known)) != len(known) or known != sorted(known, key=SECTION_NAMES.index):
        run.add(
            Finding(
                "tar.header",
                "sections duplicated or out of nydus's order",
                structure="tar sections",
                file=blob.path,
                blob_index=blob_index,
                expected=" < ".join(SECTION_NAMES),
                found=", ".join(names),
            )
        )
    if blob.toc is not None:
        _check_toc_format(run, blob, blob_index, names)
    _check_sections_vs_features(run, blob, blob_index, ent)


def _check_toc_format(run: _Run, blob: Layer, blob_index: int | None, sections: list[str]) -> None:
    raw = blob.toc_bytes
    base = blob.size - 512 - len(raw)
    seen: set[str] = set()
    entry_names = [n for n in ENTRY_NAMES if n != RAFS_BLOB_TOC]

    def bad(e, i: int, fld: str, message: str, expected, found) -> None:
        run.add(
            Finding(
                "toc.format",
                message,
                structure="rafs.blob.toc",
                file=blob.path,
                entry=e.name,
                blob_index=blob_index,
                field=fld,
                offset=base + i * toc.ENTRY_SIZE + toc.ENTRY.offsets[fld],
                expected=str(expected),
                found=str(found),
            )
        )

    for i, e in enumerate(blob.toc):
        if e.flags & ~toc.COMPRESSOR_MASK:
            bad(
                e,
                i,
                "flags",
                "flag bits outside the compressor mask",
                hex(e.flags & toc.COMPRESSOR_MASK),
                hex(e.flags),
            )
        field_raw = raw[i * toc.ENTRY_SIZE + 8 : i * toc.ENTRY_SIZE + 24]
        nul = field_raw.find(b"\0")
        if nul >= 0 and any(field_raw[nul:]):
            bad(e, i, "name", "name not NUL-padded", "zero padding", field_raw[nul:].hex())
        if e.name not in entry_names:
            bad(e, i, "name", "unknown entry name", " / ".join(entry_names), e.name)
        if e.name in seen:
            bad(e, i, "name", "entry listed twice", "unique", e.name)
        seen.add(e.name)
        if e.name == IMAGE_BLOB and e.compressed_offset not in (0, e.compressed_size):
            bad(
                e,
                i,
                "compressed_offset",
                "image.blob starts at 0 (2022 builders wrote its end)",
                f"0 or {e.compressed_size}",
                e.compressed_offset,
            )
    for sec in sections:
        wanted = [BLOB_META, BLOB_META_HEADER] if sec == BLOB_META else [sec]
        for name in wanted:
            if sec in SECTION_NAMES and sec != RAFS_BLOB_TOC and name not in seen:
                run.add(
                    Finding(
                        "toc.format",
                        f"section {sec} has no ToC entry {name}",
                        structure="rafs.blob.toc",
                        file=blob.path,
                        entry=name,
                        blob_index=blob_index,
                        expected=name,
                        found="absent",
                    )
                )


def _check_sections_vs_features(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    def bad(message: str, expected, found, entry: str | None = None) -> None:
        run.add(
            Finding(
                "blob.layout",
                message,
                structure="blob.meta.header" if entry is None else entry,
                file=blob.path,
                entry=entry,
                blob_index=blob_index,
                expected=str(expected),
                found=str(found),
            )
        )

    has = {n: blob.has_entry(n) for n in (IMAGE_BLOB, BLOB_META, BLOB_DIGEST, IMAGE_BOOT)}
    if blob.toc is None:
        if has[BLOB_DIGEST]:
            bad(
                "a blob.digest section without a ToC (nydus writes both or neither)",
                "rafs.blob.toc",
                "absent",
                BLOB_DIGEST,
            )
        if has[IMAGE_BOOT] and blob.entry_location(IMAGE_BOOT)[2] is not Compressor.NONE:
            bad(
                "image.boot is compressed but there is no ToC to say so (nydus reads it raw)",
                "raw",
                "zstd",
                IMAGE_BOOT,
            )
    if not any(has.values()):
        bad(
            "the blob holds no section: no chunk data, no blob.meta, no bootstrap",
            "blob.meta or image.boot",
            "absent",
            RAFS_BLOB_TOC if blob.toc is not None else None,
        )
    elif has[IMAGE_BLOB] and not has[BLOB_META] and not has[IMAGE_BOOT]:
        bad(
            "chunk data with neither blob.meta nor a bootstrap to describe it",
            "blob.meta or image.boot",
            "absent",
            IMAGE_BLOB,
        )
    try:
        hdr = blob.blob_meta_header
    except NydusInspectError:
        return  # the blob.meta pass reports it
    if hdr is None:
        return
    feats = hdr.s_features
    if feats & blob_meta.HAS_TOC and blob.toc is None:
        bad("features say HAS_TOC but the blob has no ToC", "rafs.blob.toc", "absent")
    if feats & blob_meta.INLINED_CHUNK_DIGEST and not has[BLOB_DIGEST]:
        bad("features say INLINED_CHUNK_DIGEST but there is no blob.digest", "blob.digest", "absent")
    if has[BLOB_DIGEST] and not feats & blob_meta.INLINED_CHUNK_DIGEST:
        bad(
            "a blob.digest section without the INLINED_CHUNK_DIGEST feature",
            "inlined_chunk_digest",
            hex(feats),
        )
    if feats & blob_meta.INLINED_FS_META and not has[IMAGE_BOOT]:
        bad("features say INLINED_FS_META but there is no image.boot", "image.boot", "absent")
    if not feats & blob_meta.ALIGNED and not feats & blob_meta.TARFS:
        bad("ALIGNED is required on RAFS v6 blobs", "aligned", hex(feats))
    if (
        feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED)
        and not feats & blob_meta.CHUNK_INFO_V2
    ):
        bad("BATCH, ZRAN and ENCRYPTED need CHUNK_INFO_V2", "chunk_info_v2", hex(feats))
    zran = feats & (blob_meta.ZRAN | blob_meta.BATCH)
    if not zran and (hdr.s_ci_zran_offset or hdr.s_ci_zran_size or hdr.s_ci_zran_count):
        bad(
            "zran/batch context fields set on a blob without zran or batches",
            0,
            f"{hdr.s_ci_zran_offset}/{hdr.s_ci_zran_size}/{hdr.s_ci_zran_count}",
        )
