"""The GIL-free work of a verify run, started on the read-ahead scheduler before the bootstrap walk (:class:`_Ahead`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..chunks.readahead import Scheduler
from ..formats.tar_header import (
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_NO_TOC, KIND_BLOB_TOC, Layer
from .blob_ids import _HEX64, _blob_id_pass, _content_digests
from .chunks import ChunkVerifier, _Batches
from .toc import _entry_finding, entry_check

if TYPE_CHECKING:
    from .findings import Finding
    from .run import _Run


class _Ahead:
    """The GIL-free work of a run (chunk decompression and digests, ToC entry sha256s), started in worker
    threads before the bootstrap walk so that it overlaps the Python-bound structural checks.

    Only a head start: each stage takes its results in its turn, in the same order, so the report is the
    one a sequential run makes. Whatever cannot be set up early is left to its stage, which then does it
    (and reports its problems) itself.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.pool: Scheduler | None = None
        self.chunks: dict[tuple[int | None, str], tuple[ChunkVerifier, _Batches]] = {}
        self.entries: dict[tuple[str, str], object] = {}
        self.contents: dict[str, object] = {}  # blob path -> future of _content_digests (blob.id)

    def start(self) -> None:
        self.run.layer.will_need()  # every byte of it is read: the disk can start while the bootstrap decodes
        try:
            targets = self._targets()
        except Exception:  # noqa: BLE001 - the stages meet (and report) the same problem in their turn
            return
        if not targets:
            return
        for _, blob in targets:
            if blob is not self.run.layer:
                blob.will_need()
        # One thread fewer than the CPUs: the main thread has the bootstrap walk to do meanwhile, and takes
        # its share of the chunk batches still waiting when it gets to them (take_chunks).
        self.pool = Scheduler(max(1, self.run.workers - 1), name="verify")
        try:
            ids = self._id_blobs(targets)
        except Exception:  # noqa: BLE001
            ids = set()
        for _, blob in targets:
            try:
                shared = None
                if blob.path in ids:
                    # One read of the file for its blob id, and for the image.blob entry when that is a prefix.
                    shared = _blob_id_pass(blob)
                    self.contents[blob.path] = self.pool.submit(_content_digests, blob, shared)
                if blob.toc is not None:
                    for e in blob.toc:
                        key = (blob.path, e.name)
                        if shared is not None and e.name == IMAGE_BLOB:
                            self.entries[key] = self.contents[blob.path]
                        else:
                            self.entries[key] = self.pool.submit(entry_check, blob, e.name)
            except Exception:  # noqa: BLE001
                pass
        for blob_index, blob in targets:
            try:
                blob.chunk_infos  # noqa: B018
                cv = (
                    ChunkVerifier(self.run.layer, blob_index)
                    if blob_index is not None
                    else ChunkVerifier(blob)
                )
                cv.table  # noqa: B018
            except Exception:  # noqa: BLE001
                continue
            self.chunks[(blob_index, blob.path)] = (cv, _Batches(self.pool, cv, 2 * self.pool.workers))

    def _targets(self) -> list[tuple[int | None, Layer]]:
        """(blob index, blob layer) pairs as :func:`_blob_layers` will find them (a subset of them)."""
        layer = self.run.layer
        if layer.has_bootstrap and not layer.is_v5:
            out = []
            for ent in layer.rafs.blobs:
                bf = layer.blob_file(ent.blob_index, required=False)
                if bf is not None:
                    out.append((ent.blob_index, bf.layer))
            return out
        if not layer.has_bootstrap and layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
            return [(None, layer)]
        return []

    def _id_blobs(self, targets) -> set[str]:
        """Paths of the blobs whose blob id :func:`_check_blob_ids` will check (as it chooses them)."""
        layer = self.run.layer
        out = set()
        if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC) and _HEX64.fullmatch(layer.name.split(".")[0]):
            out.add(layer.path)
        rafs = layer.rafs if layer.has_bootstrap and not layer.is_v5 else None
        for blob_index, blob in targets:
            if rafs is not None and blob_index is not None and blob is not layer:
                if _HEX64.fullmatch(rafs.blobs[blob_index].id):
                    out.add(blob.path)
        return out

    def entry_check(self, blob: Layer, name: str) -> Finding | None:
        fut = self.entries.pop((blob.path, name), None)
        if fut is not None and fut is self.contents.get(blob.path):
            try:
                got = fut.result()[2]
                recorded = blob.entry_location(name)[4]
            except Exception:  # noqa: BLE001 - checked the ordinary way, which reports it
                return entry_check(blob, name)
            return _entry_finding(blob, name, recorded.hex() if recorded is not None else "", got)
        return fut.result() if fut is not None else entry_check(blob, name)

    def content_digests(self, blob: Layer) -> tuple[str, str | None]:
        fut = self.contents.pop(blob.path, None)
        if fut is not None:
            try:
                return fut.result()[:2]
            except Exception:  # noqa: BLE001 - read again the ordinary way, which raises it in its turn
                pass
        return _content_digests(blob)[:2]

    def take_chunks(self, blob_index: int | None, blob: Layer) -> tuple[ChunkVerifier, _Batches] | None:
        return self.chunks.pop((blob_index, blob.path), None)

    def close(self) -> None:
        for _, batches in self.chunks.values():
            batches.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
