"""Checks ``blob.id``: a blob file named by a 64-hex id hashes to it."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..codecs import Compressor
from ..errors import NydusInspectError
from ..formats.tar_header import (
    BLOB_DIGEST,
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_NO_TOC, KIND_BLOB_TOC, KIND_DATA_BLOB, Layer
from .findings import Cancelled, Finding

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- tar headers, ToC format, layout
_HEX64 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------- content addresses
def _check_blob_ids(run: _Run, blobs: list) -> None:
    """A blob file named by a 64-hex id hashes to it (OCI layouts and blob dirs name blobs by digest)."""
    layer = run.layer
    todo: list[tuple[Layer, str, int | None]] = []
    # A data blob opened alone too: a blob dir names it by its id, and with no bootstrap (no chunk table) its
    # sha256 is all that covers its chunks' bytes.
    if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC, KIND_DATA_BLOB):
        stem = layer.name.split(".")[0]
        if _HEX64.fullmatch(stem):
            todo.append((layer, stem, None))
    for blob_index, blob, ent in blobs:
        if blob is not layer and ent is not None and _HEX64.fullmatch(ent.id):
            todo.append((blob, ent.id, blob_index))
    for blob, want, blob_index in todo:
        if run.cancel is not None and run.cancel():
            raise Cancelled("verification cancelled during blob.id")
        full, partial = run.ahead.content_digests(blob)
        run.count("blob ids")
        if want not in (full, partial):
            run.add(
                Finding(
                    "blob.id",
                    "the blob's sha256 (whole file, or without the blob.digest array) is not its id",
                    structure="blob file",
                    file=blob.path,
                    blob_index=blob_index,
                    expected=want,
                    found=full,
                )
            )


def _content_digests(blob: Layer, prefix: int | None = None) -> tuple[str, str | None, str | None]:
    """(sha256 of the file, sha256 of the file without its blob.digest array or None, sha256 of its first
    ``prefix`` bytes or None), in one read of the file."""
    skip = None
    try:
        if blob.has_entry(BLOB_DIGEST):
            off, size = blob.entry_location(BLOB_DIGEST)[:2]
            if 0 <= off <= off + size <= blob.size:
                skip = (off, off + size)
    except NydusInspectError:
        skip = None
    full = hashlib.sha256()
    part = hashlib.sha256() if skip else None
    head = None
    step = 4 << 20
    pos = 0
    while pos < blob.size:
        stop = min(blob.size, pos + step)
        if skip and pos < skip[1] and skip[0] < stop:
            stop = skip[0] if pos < skip[0] else skip[1]
        if prefix is not None and pos < prefix < stop:
            stop = prefix
        data = blob.pread(pos, stop - pos, "blob")
        full.update(data)
        if part is not None and not (skip[0] <= pos < skip[1]):
            part.update(data)
        pos = stop
        if pos == prefix:
            head = full.hexdigest()
    return full.hexdigest(), part.hexdigest() if part is not None else None, head


def _blob_id_pass(blob: Layer) -> int | None:
    """Where the sha256 of the image.blob ToC entry (its data, then its tar header) ends when it is a prefix of
    the file, so that the blob-id pass can give it too; else None."""
    if blob.toc is None:
        return None
    try:
        off, size, comp, _, _ = blob.entry_location(IMAGE_BLOB)
    except NydusInspectError:
        return None
    if off != 0 or comp is not Compressor.NONE or size + 512 > blob.size:
        return None
    return size + 512
