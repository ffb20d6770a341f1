"""Decode file data ahead of a sequential consumer (unpack, diff, cache-file, verify).

Chunks of the coming files are decompressed and checked in a thread pool
(zstandard, lz4 and blake3 release the GIL) while the caller writes the
current file. Small files travel in groups of about 1 MiB per task, so that
thread hand-offs stay rare; the window is bounded in bytes, so memory stays
flat.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .chunks.ref import ChunkRef
from .layer import Layer
from .model import REG, Node

#: While Python threads share work with C code that drops the GIL, let them hand the GIL over after this
#: long instead of the default 5 ms: a worker back from compressing or decoding otherwise waits behind a
#: main thread busy in Python (pack's tar parsing, unpack's layout, verify's bootstrap walk).
SWITCH_INTERVAL = 0.001


_bulk_lock = threading.Lock()
_bulk_jobs = 0
_bulk_saved: tuple[float, bool] = (0.0, True)


@contextlib.contextmanager
def bulk_work(interval: float = SWITCH_INTERVAL) -> Iterator[None]:
    """Run a pack, unpack or verify: the GIL changes hands after ``interval``, and, for a job run by the main
    thread (a command), the cyclic garbage collector is off until the end.

    These jobs make one object or more per tar entry and per chunk, and keep most of them to the end (the
    tree, the chunk list), so each collection walks a heap that keeps growing, while holding the GIL that
    the workers need: a pack of a Debian rootfs spent about 30 ms there, and stalled its workers for longer.
    What they make is freed by reference counting (no cycles per entry or per chunk), so memory stays as
    bounded as before; anything cyclic is collected after the job. A job started by another thread (the
    TUI's) leaves the collector alone: the application around it keeps making garbage of its own.

    Both settings belong to the process: jobs that overlap share them, and the last one to end puts back
    what the first one found."""
    global _bulk_jobs, _bulk_saved
    with _bulk_lock:
        if _bulk_jobs == 0:
            _bulk_saved = (sys.getswitchinterval(), gc.isenabled())
            sys.setswitchinterval(min(_bulk_saved[0], interval))
            if threading.current_thread() is threading.main_thread():
                gc.disable()
        _bulk_jobs += 1
    try:
        yield
    finally:
        with _bulk_lock:
            _bulk_jobs -= 1
            if _bulk_jobs == 0:
                sys.setswitchinterval(_bulk_saved[0])
                if _bulk_saved[1]:
                    gc.enable()


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


def decode_group(layer: Layer, chunks: list[ChunkRef], verify: bool = True) -> list:
    """Each chunk's checked, decoded bytes, in order (``ChunkReader.decode_group``). Safe to call from worker
    threads."""
    return layer.chunk_reader.decode_group(chunks, verify)


def iter_with_data(
    layer: Layer, nodes: Iterable[Node], *, window: int = DEFAULT_WINDOW, workers: int = 0, verify: bool = True
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
                    ready.append((node, None, 0))
                else:
                    ready.append((node, [ChunkResult(fut, first + i) for i in range(count)], node.size))
            group, group_nodes, group_bytes = [], [], 0

        try:
            for node in nodes:
                if node.type == REG:
                    chunks = node.chunks if node.chunks is not None else rafs.chunks(node)
                    group_nodes.append((node, len(group), len(chunks)))
                    group.extend(chunks)
                    group_bytes += node.size
                    in_flight += node.size
                else:
                    group_nodes.append((node, 0, -1))
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
