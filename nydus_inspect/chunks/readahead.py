"""The one read-ahead: worker threads that decode and check chunks ahead of whoever reads them.

:class:`Scheduler` is the only pool of decoding threads in the program. It takes units of work (lists of
items) in two queues, urgent (somebody waits for them) before background (decoding ahead), and runs each
item no one has claimed meanwhile: an item is claimed by moving its ``state`` from QUEUED, under the
scheduler's ``lock``, so a reader that gets to a queued item first takes it over instead of waiting
(:meth:`Scheduler.claim`). It is also a :class:`concurrent.futures.Executor` (``submit`` gives a Future),
which is how verify feeds it its batches and the sequential readers below their groups.

- :func:`iter_with_data` drives it for a sequential consumer (cat, unpack, diff, cache-file): the chunks of
  the coming files are decoded while the caller writes the current one. Small files travel in groups of
  about GROUP_BYTES per task, so that thread hand-offs stay rare; the window is bounded in bytes, so memory
  stays flat.
- The FUSE mount (``mount.fs``) drives it from trio: it queues its chunk jobs, file prefetches and
  read-ahead hints as items, and the scheduler hands each to the mount's ``run`` callback in a worker thread,
  which posts the result back to the loop.
- verify starts its chunk batches, ToC entry digests and blob-id passes on it before the bootstrap walk.

zstd, lz4, blake3, sha256 and pread release the GIL, so the workers decode while the caller's thread does
its Python work.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from .ref import ChunkRef

if TYPE_CHECKING:
    from ..layer import Layer
    from ..model import Node

log = logging.getLogger(__name__)

#: An item's life: queued, taken by a worker (or by a reader that got to it first), finished, given up.
QUEUED, RUNNING, DONE, CANCELLED = range(4)

#: Bytes of coming files decoded ahead of a sequential reader. Four of filedata's 8 MiB pieces keep two to
#: four workers busy; the decoded bytes (and, for incompressible data, as many compressed ones) are held
#: outside the Python heap, so each doubling of the window shows directly in the peak RSS.
DEFAULT_WINDOW = 32 << 20
GROUP_BYTES = 1 << 20
GROUP_FILES = 256


class _Task:
    """A callable submitted through the Executor interface: its Future says whether it was cancelled."""

    __slots__ = ("fn", "args", "kwargs", "future")

    def __init__(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: Future = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the Future
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class Scheduler(Executor):
    """Decoding threads taking units of work, urgent ones first.

    ``run(item)`` is called in a worker for each item of a unit that is still QUEUED (it is RUNNING then);
    items submitted with :meth:`submit` run as Futures. Threads start with the first unit queued, or with
    :meth:`start` when made with ``start=False`` (the mount: its results go to a loop that must exist first).
    """

    def __init__(
        self,
        workers: int = 0,
        *,
        run: Callable[[object], None] | None = None,
        name: str = "readahead",
        start: bool = True,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._run = run
        self._name = name
        self.lock = threading.Lock()  # the queues and every queued item's state
        self._wake = threading.Condition(self.lock)
        self._urgent: deque[list] = deque()
        self._background: deque[list] = deque()
        self._threads: list[threading.Thread] = []
        self._started = start
        self._stopping = False

    @property
    def _max_workers(self) -> int:  # the name ThreadPoolExecutor gives it, which callers size queues by
        return self.workers

    # ------------------------------------------------------------------ queueing
    def start(self) -> None:
        with self.lock:
            self._started = True
            pending = bool(self._urgent or self._background)
        if pending:
            self._spawn()

    def queue(self, unit: list, urgent: bool = False) -> None:
        """Queue a unit of items (run in order by one worker). Queuing an item already queued again as urgent
        is how a reader moves it up: whichever worker gets to it first runs it, the other skips it."""
        with self._wake:
            if self._stopping:
                raise RuntimeError("the read-ahead scheduler is shut down")
            (self._urgent if urgent else self._background).append(unit)
            self._wake.notify()
        if not self._threads and self._started:
            self._spawn()

    def claim(self, item) -> bool:
        """Take a QUEUED item away from the workers (the caller does its work itself); False once a worker
        has started it (then wait for it) or it is done."""
        with self.lock:
            if item.state == QUEUED:
                item.state = CANCELLED
                return True
        return False

    def pending(self) -> list:
        """The items still queued (urgent first), a snapshot: what a test or a status line looks at."""
        with self.lock:
            return [item for unit in (*self._urgent, *self._background) for item in unit]

    def submit(self, fn, /, *args, **kwargs) -> Future:
        task = _Task(fn, args, kwargs)
        self.queue([task])
        return task.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers once the queues are empty; with ``cancel_futures`` (or ``wait=False``) what is
        still queued is dropped (its Futures cancelled)."""
        with self._wake:
            self._stopping = True
            if cancel_futures or not wait:
                dropped = [*self._urgent, *self._background]
                self._urgent.clear()
                self._background.clear()
            else:
                dropped = []
            self._wake.notify_all()
        for unit in dropped:
            for item in unit:
                if type(item) is _Task:
                    item.future.cancel()
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()

    # ------------------------------------------------------------------ workers
    def _spawn(self) -> None:
        with self.lock:
            if self._threads or self._stopping:
                return
            for i in range(self.workers):
                t = threading.Thread(target=self._worker, name=f"{self._name}-{i}", daemon=True)
                self._threads.append(t)
        for t in self._threads:
            t.start()

    def _worker(self) -> None:
        wake, urgent, background = self._wake, self._urgent, self._background
        while True:
            with wake:
                while not (urgent or background or self._stopping):
                    wake.wait()
                if not (urgent or background):
                    return  # stopping, and nothing left
                unit = (urgent or background).popleft()
            self._work(unit)

    def _work(self, unit: list) -> None:
        lock, run = self.lock, self._run
        for item in unit:
            if type(item) is _Task:
                item.run()
                continue
            with lock:
                if item.state != QUEUED:
                    continue
                item.state = RUNNING
            try:
                run(item)
            except Exception:  # a bug in a callback must not end a worker: the others would wait for it
                log.exception("read-ahead item %r failed", item)


# ---------------------------------------------------------------------------- sequential readers
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
    from ..model import REG

    rafs = layer.rafs
    ready: deque[tuple[Node, list[ChunkResult] | None, int]] = deque()
    group: list[ChunkRef] = []
    group_nodes: list[tuple[Node, int, int]] = []  # node, first index in group, chunk count
    group_bytes = 0
    in_flight = 0

    with Scheduler(workers, name="readahead") as pool:

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
