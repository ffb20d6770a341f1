"""Decode file data ahead of a sequential consumer (unpack, diff, cache-file, verify).

Chunks of the coming files are decompressed and checked in a thread pool
(zstandard, lz4 and blake3 release the GIL) while the caller writes the
current file. Small files travel in groups of about 1 MiB per task, so that
thread hand-offs stay rare; the window is bounded in bytes, so memory stays
flat.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .chunks.ref import ChunkRef
from .layer import Layer
from .model import REG, Node

DEFAULT_WINDOW = 64 << 20
GROUP_BYTES = 1 << 20
GROUP_FILES = 256


class ChunkResult:
    """One chunk's bytes from a group task; ``result()`` waits for the group (Future-like)."""

    __slots__ = ("_future", "_index")

    def __init__(self, future: Future, index: int) -> None:
        self._future = future
        self._index = index

    def result(self) -> bytes:
        return self._future.result()[self._index]


def _held(node) -> int:
    """Bytes a queued entry holds besides its file data: its path (a deep tree's paths are long), or what an
    object standing for an entry says it holds (``held``)."""
    held = getattr(node, "held", None)
    return held if held is not None else len(getattr(node, "path", b""))


def decode_group(layer: Layer, chunks: list[ChunkRef], verify: bool = True) -> list:
    """Each chunk's checked, decoded bytes, in order (``ChunkReader.decode_group``). Safe to call from worker
    threads."""
    return layer.chunk_reader.decode_group(chunks, verify)


def iter_with_data(
    layer: Layer,
    nodes: Iterable[Node],
    *,
    window: int = DEFAULT_WINDOW,
    workers: int = 0,
    verify: bool = True,
) -> Iterator[tuple[Node, list[ChunkResult] | None]]:
    """Yield ``(node, results)`` in order; for regular files each result gives one chunk's bytes."""
    rafs = layer.rafs
    workers = workers or os.cpu_count() or 1
    ready: deque[tuple[Node, list[ChunkResult] | None, int]] = deque()
    group: list[ChunkRef] = []
    group_nodes: list[tuple[Node, int, int]] = []  # node, first index in group, chunk count
    group_bytes = 0
    in_flight = 0

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="readahead") as pool:

        def flush() -> None:
            nonlocal group, group_nodes, group_bytes
            if not group_nodes:
                return
            fut = pool.submit(decode_group, layer, group, verify)
            for node, first, count in group_nodes:
                if count < 0:
                    ready.append((node, None, _held(node)))
                else:
                    results = [ChunkResult(fut, first + i) for i in range(count)]
                    ready.append((node, results, node.size + _held(node)))
            group, group_nodes, group_bytes = [], [], 0

        try:
            for node in nodes:
                # A node weighs its path too: a deep tree's paths are long, and the window bounds them as well
                # (a group is flushed once its nodes hold GROUP_BYTES, whether in data or in paths).
                held = _held(node)
                if node.type == REG:
                    chunks = node.chunks if node.chunks is not None else rafs.chunks(node)
                    group_nodes.append((node, len(group), len(chunks)))
                    group.extend(chunks)
                    group_bytes += node.size + held
                    in_flight += node.size + held
                else:
                    group_nodes.append((node, 0, -1))
                    group_bytes += held
                    in_flight += held
                if group_bytes >= GROUP_BYTES or len(group_nodes) >= GROUP_FILES:
                    flush()
                while ready and (in_flight > window or len(ready) > 4 * GROUP_FILES):
                    n, res, size = ready.popleft()
                    in_flight -= size
                    yield n, res
            flush()
            while ready:
                n, res, _ = ready.popleft()
                yield n, res
        finally:
            ready.clear()
