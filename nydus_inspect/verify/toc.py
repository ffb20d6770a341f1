"""Checks ``toc.entry``, ``toc.section`` and ``toc.digest``: every ToC entry's sha256 and location, and
the ToC's digest against the bootstrap's blob table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FormatError, NydusInspectError
from ..formats import blob_meta
from ..formats.tar_header import (
    BLOB_META,
    BLOB_META_HEADER,
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_NO_TOC, Layer
from .findings import Finding, _exc_finding, _with

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- ToC
def _entry_sha256(blob: Layer, name: str) -> tuple[str, str]:
    """(recorded, recomputed) sha256 of entry ``name``; raises FormatError when it does not read."""
    off, size, _, _, digest = blob.entry_location(name)
    h = blob.entry_sha256(name)
    if name == IMAGE_BLOB:
        h.update(blob.pread(off + size, 512, "image.blob tar header"))
    return (digest.hex() if digest is not None else ""), h.hexdigest()


def entry_check(blob: Layer, name: str) -> Finding | None:
    """Recompute the sha256 of one ToC entry; a Finding when it differs or does not read (else None)."""
    try:
        recorded, got = _entry_sha256(blob, name)
    except NydusInspectError as exc:
        return _exc_finding("toc.entry", exc, entry=name, file=blob.path)
    return _entry_finding(blob, name, recorded, got)


def _entry_finding(blob: Layer, name: str, recorded: str, got: str) -> Finding | None:
    if recorded and recorded != got:
        off = blob.entry_location(name)[0]
        return Finding(
            "toc.entry",
            "sha256 differs from the ToC",
            structure="rafs.blob.toc",
            file=blob.path,
            entry=name,
            offset=off,
            field="uncompressed_digest",
            expected=recorded,
            found=got,
        )
    return None


def _check_toc(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    if blob.toc is None:
        if ent is not None and (ent.blob_toc_size or any(ent.blob_toc_digest)):
            run.add(
                Finding(
                    "toc.digest",
                    "the bootstrap's blob table records a ToC, but the blob has none",
                    structure="rafs.blob.toc",
                    file=blob.path,
                    blob_index=blob_index,
                    expected=f"{ent.blob_toc_size}-byte ToC {ent.blob_toc_digest.hex()}",
                    found="no ToC",
                )
            )
        if blob.kind == KIND_BLOB_NO_TOC:
            run.report.notes.append(
                f"{blob.name}: no ToC; entries found by the tar-header walk, no sha256 to check"
            )
        return
    names = [e.name for e in blob.toc]
    for i, name in enumerate(names):
        run.tick("toc", i, len(names))
        finding = run.ahead.entry_check(blob, name)
        run.count("toc entries")
        if finding is not None:
            run.add(finding if blob_index is None else _with(finding, blob_index=blob_index))
        _check_section(run, blob, name, blob_index)
    run.tick("toc", len(names), len(names))
    # The ToC digest, recomputed, against what the bootstrap recorded for this blob.
    got = blob.toc_digest.hex()
    size = len(blob.toc_bytes) + 512
    if ent is not None and any(ent.blob_toc_digest):
        want = ent.blob_toc_digest.hex()
        if want != got:
            run.add(
                Finding(
                    "toc.digest",
                    "recomputed ToC digest differs from the bootstrap's blob table",
                    structure="rafs.blob.toc",
                    file=blob.path,
                    blob_index=blob_index,
                    offset=blob.size - size,
                    expected=want,
                    found=got,
                )
            )
    if ent is not None and ent.blob_toc_size and ent.blob_toc_size != size:
        run.add(
            Finding(
                "toc.digest",
                "ToC size differs from the bootstrap's blob table",
                structure="rafs.blob.toc",
                file=blob.path,
                blob_index=blob_index,
                field="blob_toc_size",
                expected=str(ent.blob_toc_size),
                found=str(size),
            )
        )
    run.count("toc digests")


def _check_section(run: _Run, blob: Layer, name: str, blob_index: int | None) -> None:
    """The ToC's location of an entry against the tar header after the entry's data."""
    sec_name = BLOB_META if name == BLOB_META_HEADER else name
    try:
        sec = blob.section(sec_name)
    except FormatError as exc:  # the tar-header walk is lazy: a damaged header surfaces here
        run.add(_exc_finding("toc.section", exc, file=blob.path, entry=name, blob_index=blob_index))
        return
    if sec is None:
        run.add(
            Finding(
                "toc.section",
                f"no tar header named {sec_name} follows the data",
                file=blob.path,
                entry=name,
                blob_index=blob_index,
            )
        )
        return
    off, size, _, _, _ = blob.entry_location(name)
    if name == BLOB_META:
        want = (sec.offset, sec.size - blob_meta.HEADER_SIZE)
    elif name == BLOB_META_HEADER:
        want = (sec.offset + sec.size - blob_meta.HEADER_SIZE, blob_meta.HEADER_SIZE)
    else:
        want = (sec.offset, sec.size)
    if (off, size) != want:
        run.add(
            Finding(
                "toc.section",
                "ToC location differs from the tar headers",
                structure="rafs.blob.toc",
                file=blob.path,
                entry=name,
                blob_index=blob_index,
                offset=off,
                expected=f"{want[0]}+{want[1]}",
                found=f"{off}+{size}",
            )
        )
