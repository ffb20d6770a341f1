"""Which blob files a run checks: the layer itself, or every blob its bootstrap names (``blob.missing``,
``blob.unreadable``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import FormatError, NydusInspectError
from ..formats.tar_header import (
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_NO_TOC, KIND_BLOB_TOC, Layer
from .findings import Finding, _exc_finding

if TYPE_CHECKING:
    from .run import _Run


# ---------------------------------------------------------------------------- which blob files
def _blob_layers(run: _Run) -> Iterator[tuple[int | None, Layer, object]]:
    """(blob index or None, the Layer holding that blob's data, its blob-table entry or None)."""
    layer = run.layer
    rafs = None
    if run.index is not None:
        try:
            rafs = layer.rafs
        except NydusInspectError:
            rafs = None
    if rafs is None:
        # A data blob that ends in its blob.meta header (nydus up to v2.1) is checked on its own too.
        if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC) or layer.own_meta is not None:
            yield None, layer, None
        return
    own_seen = False
    for ent in rafs.blobs:
        try:
            bf = layer.blob_file(ent.blob_index, required=False)
        except FormatError as exc:
            run.add(_exc_finding("blob.unreadable", exc, blob_index=ent.blob_index, file=layer.path))
            continue
        except NydusInspectError as exc:
            run.add(_exc_finding("blob.missing", exc, blob_index=ent.blob_index, file=layer.path))
            continue
        if bf is None:
            run.add(
                Finding(
                    "blob.missing",
                    f"{'external blob' if ent.blob_index in rafs.external else 'blob'} {ent.id} not found; "
                    "give it with --blob or --blob-dir",
                    structure="rafs v6 blob table",
                    blob_index=ent.blob_index,
                    file=layer.path,
                    expected=ent.id,
                    found="absent",
                )
            )
            continue
        own_seen = own_seen or bf.layer is layer
        yield ent.blob_index, bf.layer, ent
    if not own_seen and layer.kind == KIND_BLOB_TOC and layer.has_entry(IMAGE_BLOB):
        # A blob whose data no blob-table entry claims (an inline bootstrap naming other blobs only).
        yield None, layer, None
