"""Checks of an eStargz layer (``estargz.footer``, ``estargz.toc``, ``estargz.toc_digest``, ``estargz.chunk``,
``estargz.file``): the footer and the TOC decode; the TOC's sha256 equals the TOC digest the user gives (the
``containerd.io/snapshot/stargz/toc.digest`` annotation); every data entry's gzip member inflates, through the
chunk service, to bytes whose sha256 is its ``chunkDigest`` (an entry sharing its member with others: its
bytes at its ``innerOffset`` in the member's output); every file's bytes have its ``digest``. Each
finding names the TOC entry, its path and the offset of its gzip member in the blob.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..chunks.decode import ChunkReader
from ..errors import FormatError, NydusInspectError
from .findings import Finding, _exc_finding

if TYPE_CHECKING:
    from .run import _Run


def _check_estargz(run: _Run, toc_digest: str | None) -> None:
    layer = run.layer
    try:
        index = layer.estargz_index
    except NydusInspectError as exc:
        check = (
            "estargz.footer" if isinstance(exc, FormatError) and "footer" in exc.structure else "estargz.toc"
        )
        run.add(_exc_finding(check, exc, file=layer.path))
        return
    toc_at = index.footer.toc_offset
    if toc_digest is not None:
        want = toc_digest.strip().lower().removeprefix("sha256:")
        if want != index.toc.digest.hex():
            run.add(
                Finding(
                    "estargz.toc_digest",
                    "the TOC's sha256 differs from the given TOC digest",
                    structure="estargz TOC",
                    file=layer.path,
                    offset=toc_at,
                    expected="sha256:" + want,
                    found="sha256:" + index.toc.digest.hex(),
                )
            )
    try:
        refs = index.chunk_refs()
    except NydusInspectError as exc:
        run.add(_exc_finding("estargz.toc", exc, file=layer.path))
        return
    reader = ChunkReader(layer.blob_file)
    total = len(refs)
    run.tick("chunks", 0, total)
    # Per file: its TOC entry, the running sha256 of its bytes, and whether every chunk of it read.
    whole: dict[str, tuple[object, object, bool]] = {}
    for n, (e, ref) in enumerate(refs):
        if e.type == "reg":
            whole[e.path] = (e, hashlib.sha256(), True)
        head = whole.get(e.path)
        try:
            data = reader.decode(ref)
        except FormatError as exc:
            run.add(
                Finding(
                    "estargz.chunk",
                    exc.detail,
                    structure="estargz chunk",
                    file=layer.path,
                    entry=f"{e.index} ({e.type} at file offset {e.chunk_offset})",
                    chunk=ref.ci_index,
                    path="/" + e.path,
                    offset=e.offset,
                )
            )
            if head is not None:
                whole[e.path] = (head[0], head[1], False)
            continue
        if head is not None and head[2]:
            head[1].update(data)
        if n & 255 == 255:
            run.tick("chunks", n + 1, total)
    run.tick("chunks", total, total)
    run.report.checked["chunks"] = total
    for e, h, ok in whole.values():
        if ok and e.digest and h.digest() != e.digest:
            run.add(
                Finding(
                    "estargz.file",
                    "the file's sha256 differs from its TOC digest",
                    structure="estargz TOC",
                    file=layer.path,
                    entry=str(e.index),
                    path="/" + e.path,
                    offset=e.offset,
                    expected="sha256:" + e.digest.hex(),
                    found="sha256:" + h.hexdigest(),
                )
            )
    empty = hashlib.sha256(b"").digest()
    for e in index.toc.entries:
        if e.type == "reg" and not e.size and e.digest and e.digest != empty:
            run.add(
                Finding(
                    "estargz.file",
                    "an empty file whose TOC digest is not that of no bytes",
                    structure="estargz TOC",
                    file=layer.path,
                    entry=str(e.index),
                    path="/" + e.path,
                    expected="sha256:" + empty.hex(),
                    found="sha256:" + e.digest.hex(),
                )
            )
