"""Chunks of a targz-ref (zran) blob: inflated from the original ``.tar.gz`` through its inflate contexts.

:class:`ZranBlob` is the chunk kind :class:`~.decode.ChunkReader` hands a zran chunk to: it finds the
chunk's context in the blob.meta record, inflates that context once (an LRU of decoded contexts, so reading
the consecutive chunks of one context inflates it once) and cuts the chunk out. The bytes are checked by the
reader like any other chunk's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property

from ..errors import FormatError
from ..formats import blob_meta, zran
from .ref import ChunkRef


class ZranBlob:
    """The zran view of one blob: ``source`` is the gzip, ``infos`` the blob.meta chunk-info array (its
    ``data`` holds the zran table), ``header`` the blob.meta header that places the table."""

    #: Decoded contexts kept (each at most a few MiB: nydus cuts them at about two chunks).
    KEEP = 8

    def __init__(self, source, infos: blob_meta.ChunkInfoArray, header: blob_meta.BlobMetaHeader) -> None:
        self.source = source
        self.infos = infos
        self.header = header
        #: How many contexts were inflated (a count the laziness tests read).
        self.inflated = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    @cached_property
    def contexts(self) -> list[zran.ZranContext]:
        h = self.header
        return zran.parse_table(
            self.infos.data, h.s_ci_zran_offset, h.s_ci_zran_size, h.s_ci_zran_count, self.infos.base
        )

    def context_of(
        self, ci_index: int, size: int, name: str = "chunk", where: int | None = None
    ) -> tuple[zran.ZranContext, int]:
        """(context, offset inside its output) of zran chunk ``ci_index`` of ``size`` bytes, checked against
        the table (``name`` and ``where`` say which chunk in messages)."""
        if not 0 <= ci_index < len(self.infos):
            raise FormatError(name, f"no blob.meta record (the blob has {len(self.infos)})", value=ci_index)
        rec = self.infos[ci_index]
        if not rec.flags & blob_meta.CI_ZRAN:
            raise FormatError(name, "a chunk of a zran blob without the zran flag", offset=where)
        index, offset = rec.data >> 32, rec.data & 0xFFFFFFFF
        contexts = self.contexts
        if index >= len(contexts):
            raise FormatError(
                name,
                f"zran context index out of range (the blob has {len(contexts)} contexts)",
                field="zran_index",
                value=index,
            )
        ctx = contexts[index]
        if offset + size > ctx.out_len:
            raise FormatError(
                name,
                f"{offset}+{size} runs past the {ctx.out_len} bytes of zran context {index}",
                field="zran_offset",
                value=offset,
            )
        return ctx, offset

    def inflate(self, ctx: zran.ZranContext) -> bytes:
        """A context's output, from the cache or inflated now (unchecked)."""
        with self._lock:
            data = self._cache.get(ctx.index)
            if data is not None:
                self._cache.move_to_end(ctx.index)
                return data
        zran.check_in_file(ctx, self.source.size)
        off, size = zran.input_range(ctx, self.source.size)
        data = zran.inflate(ctx, self.source.pread(off, size, f"zran context {ctx.index}"))
        with self._lock:
            self.inflated += 1
            self._cache[ctx.index] = data
            while len(self._cache) > self.KEEP:
                self._cache.popitem(last=False)
        return data

    def decode(self, ci_index: int, size: int, where: int | None = None, name: str | None = None) -> bytes:
        """The ``size`` bytes of zran chunk ``ci_index`` (unchecked; the reader checks them)."""
        ctx, offset = self.context_of(ci_index, size, name or f"chunk {ci_index}", where)
        data = self.inflate(ctx)
        return data[offset : offset + size]

    def chunk(self, ref: ChunkRef) -> bytes:
        """A zran chunk's bytes (unchecked; the reader checks them)."""
        return self.decode(ref.ci_index, ref.uncompressed_size, ref.compressed_offset, ref.name)
