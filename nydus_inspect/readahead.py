"""Decode file data ahead of a sequential consumer (unpack, diff, cache-file, verify).

Chunks of the coming files are decompressed and checked in a thread pool
(zstandard, lz4 and blake3 release the GIL) while the caller writes the
current file. The window is bounded in bytes, so memory stays flat.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .layer import Layer
from .model import REG, Node

DEFAULT_WINDOW = 64 << 20


def iter_with_data(
    layer: Layer, nodes: Iterable[Node], *, window: int = DEFAULT_WINDOW, workers: int = 0, verify: bool = True
) -> Iterator[tuple[Node, list[Future] | None]]:
    """Yield ``(node, futures)`` in order; for regular files each future gives one chunk's bytes."""
    rafs = layer.rafs
    workers = workers or os.cpu_count() or 1
    pending: deque[tuple[Node, list[Future] | None, int]] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="readahead") as pool:
        try:
            for node in nodes:
                futures = None
                size = 0
                if node.type == REG:
                    chunks = node.chunks if node.chunks is not None else rafs.chunks(node)
                    futures = [
                        pool.submit(layer.blob_file(c.blob_index).decode_chunk, c, rafs, verify) for c in chunks
                    ]
                    size = node.size
                pending.append((node, futures, size))
                in_flight += size
                while pending and (in_flight > window or len(pending) > 4096):
                    n, f, sz = pending.popleft()
                    in_flight -= sz
                    yield n, f
            while pending:
                n, f, _ = pending.popleft()
                yield n, f
        finally:
            for _, futs, _ in pending:
                for fut in futs or ():
                    fut.cancel()
