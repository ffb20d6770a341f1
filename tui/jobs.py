"""Long jobs (the full tree walk, the full verification) in a child process.

A thread would share the GIL with the app's event loop: a 100k-inode walk or a million-chunk
verification in a thread makes every keypress wait. A spawned child has its own interpreter; it
reopens the layer by path, reports progress through a queue (at most 20 times a second) and sends
back a picklable result. Cancelling terminates it. No textual here: the child imports only
nydus_inspect.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable

from nydus_inspect import NydusInspectError, open_layer
from nydus_inspect.analyze import Analysis, analyze
from nydus_inspect.query import FileIndex, file_index
from nydus_inspect.verify import Finding, Report, verify


def prepare() -> bool:
    """Start multiprocessing's resource tracker now, while stderr is a real file.

    Spawning starts it on first use, passing it ``sys.stderr.fileno()``; under a running Textual app
    stderr is captured and has no descriptor, and the spawn fails. Call this before the app runs;
    False means child processes cannot be used here (run the jobs in threads).
    """
    try:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    except (OSError, ValueError, AttributeError):
        return False
    return True


class JobCancelled(Exception):
    pass


class JobFailed(Exception):
    pass


def _child(q, target: Callable, args: tuple) -> None:
    last = [0.0]

    def progress(*values) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.05:
            last[0] = now
            q.put(("progress", values))

    try:
        result = target(*args, progress=progress)
    except BaseException as exc:  # the parent reports it; the child must not die silently
        q.put(("error", f"{type(exc).__name__}: {exc}"))
    else:
        q.put(("result", result))


def run_job(
    target: Callable,
    args: tuple,
    *,
    on_progress: Callable | None = None,
    cancelled: Callable[[], bool] | None = None,
    in_process: bool = True,
):
    """Run ``target(*args, progress=...)`` and return its result. Blocks: call it from a worker thread.

    With ``in_process=False`` it runs right here (tests of the job functions, or where spawning fails).
    """
    if not in_process:

        def progress(*values) -> None:
            if cancelled is not None and cancelled():
                raise JobCancelled()
            if on_progress is not None:
                on_progress(*values)

        return target(*args, progress=progress)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, target, args), daemon=True, name="nydus-inspect-job")
    proc.start()
    try:
        while True:
            try:
                kind, payload = q.get(timeout=0.1)
            except queue.Empty:
                if cancelled is not None and cancelled():
                    raise JobCancelled() from None
                if not proc.is_alive():
                    try:
                        kind, payload = q.get(timeout=0.5)
                    except queue.Empty:
                        raise JobFailed(f"the job process exited with code {proc.exitcode}") from None
                else:
                    continue
            if kind == "progress":
                if on_progress is not None:
                    on_progress(*payload)
            elif kind == "result":
                return payload
            else:
                raise JobFailed(payload)
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=5)
        q.close()


# ---------------------------------------------------------------------------- the jobs
def index_job(path: str, blob_dir: str | None, blobs: list[str] | None, progress) -> FileIndex:
    with open_layer(path, blob_dir=blob_dir, blobs=blobs) as layer:
        return file_index(layer, progress=progress)


def analyze_job(paths: list[str], blob_dir: str | None, blobs: list[str] | None, progress) -> Analysis:
    return analyze(paths, blob_dir=blob_dir, blobs=blobs, progress=progress)


def verify_job(
    path: str, blob_dir: str | None, blobs: list[str] | None, source: str | None, progress
) -> Report:
    try:
        with open_layer(path, blob_dir=blob_dir, blobs=blobs) as layer:
            return verify(layer, source=source, progress=progress)
    except NydusInspectError as exc:
        return Report(path, [Finding("open", str(exc), file=path)])
