#!/usr/bin/env python3
"""TUI responsiveness on a big layer: 100k inodes and 1M chunks.

    python bench/bench_tui.py [--inodes 100000] [--chunks 1000000] [--per-dir 1000] [--verify]

The layer is real, not synthetic: a tar streamed from a generator (100k one-line files in 100
directories, plus big files whose 4 KiB blocks all differ) is packed by ``nydus-inspect pack
--chunk-size 0x1000``: 1M distinct chunks, so blob.meta, blob.digest and the bootstrap chunk table
all hold 1M records. Building it takes about two minutes; it is kept in $NYDUS_BENCH_DIR
(/var/tmp/nydus-bench by default) for the next run.

Measured in-process with ``App.run_test()`` (headless: the compositor renders every frame, only the
final write of escape sequences to a terminal is skipped), at 120x36:

- time to first paint: from creating the app (layer already opened) to its first frame;
- time until the overview is complete (bootstrap decoded in a worker);
- the chunks screen: time to its first frame with rows, then frame latency of page-down while the
  full tree walk runs in its child process and after, of cursor-down (one row a key), and of jumps to
  the end and to an offset;
- the files screen: first frame, expanding a directory of 1000 entries (``--per-dir N``: N), and the
  frame latency of cursor-down in the tree, held and resting on each row (whose chunks and preview are
  then read in workers);
- the analysis screen: its first frame, and the time until the figures of ``analyze`` (run in a child
  process) are shown;
- the full walk (chunk owners, hardlinks, path search) and, with --verify, the full verification,
  both in child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import statistics
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DIR = Path(os.environ.get("NYDUS_BENCH_DIR", "/var/tmp/nydus-bench"))


# ---------------------------------------------------------------------------- the layer
class _Blocks(io.RawIOBase):
    """``n`` 4 KiB blocks, each starting with its own number (so no two chunks are equal), zeros after."""

    def __init__(self, start: int, n: int) -> None:
        self.i, self.end, self.buf = start, start + n, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self.buf) < len(b) and self.i < self.end:
            self.buf += b"".join(
                struct.pack("<Q", k) + bytes(4088) for k in range(self.i, min(self.end, self.i + 64))
            )
            self.i = min(self.end, self.i + 64)
        m = min(len(b), len(self.buf))
        b[:m] = self.buf[:m]
        self.buf = self.buf[m:]
        return m


def write_tar(out, inodes: int, chunks: int, per_dir: int = 1000) -> None:
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT)

    def add(name: str, data=None, size: int = 0, is_dir: bool = False) -> None:
        ti = tarfile.TarInfo(name)
        ti.mtime = 1_700_000_000
        if is_dir:
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
            return
        ti.mode, ti.size = 0o644, size
        tf.addfile(ti, data)

    ndirs = max(1, inodes // per_dir)
    for d in range(ndirs):
        add(f"d{d:03d}", is_dir=True)
    for i in range(inodes):
        data = b"file %d\n" % i
        add(f"d{i * ndirs // inodes:03d}/f{i:06d}", io.BytesIO(data), len(data))
    add("big", is_dir=True)
    k, fi, per_file = 0, 0, 65536
    big = max(0, chunks - inodes)
    while k < big:
        n = min(per_file, big - k)
        add(f"big/b{fi:04d}", io.BufferedReader(_Blocks(k, n), 1 << 20), n * 4096)
        k += n
        fi += 1
    tf.close()


def build_layer(inodes: int, chunks: int, per_dir: int = 1000) -> Path:
    name = f"tui-{inodes}-{chunks}" + (f"-{per_dir}" if per_dir != 1000 else "")
    out = BENCH_DIR / f"{name}.blob"
    if out.exists():
        return out
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    print(f"building {out} ({inodes:,} files, {chunks:,} chunks; about 2 minutes)...", flush=True)
    t0 = time.perf_counter()
    gen = subprocess.Popen(
        [sys.executable, __file__, "--write-tar", str(inodes), str(chunks), str(per_dir)],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        [sys.executable, "-m", "nydus_inspect", "pack", "-", "-o", str(out), "--chunk-size", "0x1000", "-q"],
        stdin=gen.stdout,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    gen.stdout.close()
    if gen.wait() != 0:
        raise SystemExit("tar generator failed")
    print(f"  built in {time.perf_counter() - t0:.0f} s, {out.stat().st_size:,} bytes", flush=True)
    return out


# ---------------------------------------------------------------------------- measuring
class Frames:
    """Counts frames (App._display calls with something to show) and lets the bench wait for the next one."""

    def __init__(self, app) -> None:
        self.count = 0
        self.times: list[float] = []
        self.event = asyncio.Event()
        original = app._display

        def display(screen, renderable):
            original(screen, renderable)
            if renderable is not None and not app._batch_count:
                self.count += 1
                self.times.append(time.perf_counter())
                self.event.set()

        app._display = display

    async def next(self, timeout: float = 30.0) -> float:
        self.event.clear()
        await asyncio.wait_for(self.event.wait(), timeout)
        return self.times[-1]


def children_cpu() -> float:
    """User and system seconds of the child processes that have ended so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def stats(samples: list[float]) -> str:
    ms = sorted(1000 * s for s in samples)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms  (n={len(ms)})"


async def key_latency(press, frames: Frames, n: int, rest: float = 0.0) -> list[float]:
    """Frame latency of ``n`` key presses: from calling ``press`` (a key's action) to the next frame; ``rest``
    seconds between presses (a key held down has none; a cursor resting lets the work that waits for it run)."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        press()
        await frames.next()
        out.append(time.perf_counter() - t)
        if rest:
            await asyncio.sleep(rest)
    return out


async def run(
    path: Path, verify: bool, analysis_only: bool = False, per_dir: int = 1000, inodes: int = 100_000
) -> None:
    from nydus_inspect import open_layer
    from tui.app import NydusApp

    rows: list[tuple[str, str]] = []

    def report(what: str, value: str) -> None:
        rows.append((what, value))
        print(f"  {what:<52} {value}", flush=True)

    t = time.perf_counter()
    layer = open_layer(str(path))
    report("open_layer", f"{1000 * (time.perf_counter() - t):.1f} ms")

    t0 = time.perf_counter()
    app = NydusApp([layer], freeze_heap=True)  # as `nydus-inspect tui` runs it
    frames = Frames(app)
    async with app.run_test(size=(120, 36)) as pilot:
        first = await frames.next() if not frames.times else frames.times[0]
        report("time to first paint (overview)", f"{1000 * (first - t0):.0f} ms")
        await app.workers.wait_for_complete()
        await pilot.pause()
        report(
            "overview complete (bootstrap decoded, blob table)", f"{1000 * (time.perf_counter() - t0):.0f} ms"
        )
        assert "1,000,000" in app.screen_text() or "chunk table" in app.screen_text()

        if not analysis_only:
            # Chunks screen: first frame with rows; the full walk starts in its child process now.
            t = time.perf_counter()
            app.action_show("chunks")
            table = None
            while True:
                await frames.next()
                scr = app.screen
                if getattr(scr, "sources", None) and scr.table.rows:
                    table = scr.table
                    await frames.next()
                    break
            report(
                f"chunks screen: first frame with rows ({len(table.rows):,} chunks)",
                f"{1000 * (time.perf_counter() - t):.0f} ms",
            )
            t_index = time.perf_counter()
            during = await key_latency(lambda: table.action_page(1), frames, 100)
            report("page-down frame latency, full walk running", stats(during))
            while app.view.index is None and not app.view.index_error:
                await asyncio.sleep(0.05)
            report(
                "full walk in a child process (owners, hardlinks)",
                f"{time.perf_counter() - t_index + 0.0:.1f} s after the chunks screen opened",
            )
            await pilot.pause()
            after = await key_latency(lambda: table.action_page(1), frames, 200)
            report("page-down frame latency, owners shown", stats(after))
            # One row at a time: each move also (re)starts the timer after which the detail pane follows.
            down = await key_latency(lambda: table.action_move(1), frames, 200)
            report("cursor-down frame latency, owners shown", stats(down))
            report("rows decoded by the table so far", f"{table.rendered_rows:,} (of {len(table.rows):,})")
            t = time.perf_counter()
            table.action_edge(1)
            await frames.next()
            report(
                f"End (jump to chunk {len(table.rows) - 1:,})", f"{1000 * (time.perf_counter() - t):.1f} ms"
            )
            t = time.perf_counter()
            app.screen.answer_jump("@10000000")
            await frames.next()
            report(
                "jump to compressed offset 10,000,000 (bisect)", f"{1000 * (time.perf_counter() - t):.1f} ms"
            )
            assert "/big/" in app.screen_text() or "/d" in app.screen_text()

            # Files screen.
            t = time.perf_counter()
            app.action_show("files")
            await frames.next()
            while "d000/" not in app.screen_text():
                await frames.next()
            report("files screen: first frame with the tree", f"{1000 * (time.perf_counter() - t):.0f} ms")
            tree = app.screen.query_one("#tree")
            node = next(c for c in tree.root.children if str(c.label) == "d000/")
            t = time.perf_counter()
            node.expand()
            first = await frames.next() - t
            from tui.data import DIR_PAGE

            # A directory of more than a page shows its first page and a node that loads the rest.
            entries = min(per_dir, inodes)
            shown = min(entries, DIR_PAGE) + (entries > DIR_PAGE)
            while len(node.children) < shown:
                await frames.next()
            report(
                f"expand a directory of {entries:,} entries ({min(entries, DIR_PAGE):,} shown)",
                f"{1000 * (time.perf_counter() - t):.0f} ms (its first frame after {1000 * first:.0f} ms)",
            )
            tree.focus()
            keys = await key_latency(tree.action_cursor_down, frames, 50)
            report("tree cursor-down frame latency", stats(keys))
            # Resting on each row, the file's chunks and preview are read (the first read keys the chunk table).
            keys = await key_latency(tree.action_cursor_down, frames, 30, rest=0.2)
            report("tree cursor-down frame latency, 0.2 s on each row", stats(keys))

        # Analysis screen: its first frame (the analysis then runs in a child process), then its figures.
        cpu = children_cpu()
        t = time.perf_counter()
        app.action_show("analysis")
        await frames.next()
        while app.screen.query_one("#analysis-image").value("analysis") is None and not app.screen.results:
            await frames.next()
        report("analysis screen: first frame", f"{1000 * (time.perf_counter() - t):.0f} ms")
        while app.screen.query_one("#analysis-image").value("final image") is None:
            await asyncio.sleep(0.01)
        # The frame that shows them may have been drawn already while this loop slept.
        shown = time.perf_counter()
        drawn = frames.times[-1] if frames.times and frames.times[-1] >= shown - 0.01 else await frames.next()
        while app.workers and any(w.group == "analysis" and w.is_running for w in app.workers):
            await asyncio.sleep(0.01)  # the child is reaped when its worker ends: then its CPU is counted
        report(
            "analysis screen: the figures shown",
            f"{drawn - t:.1f} s (the child's CPU {children_cpu() - cpu:.1f} s)",
        )

        if verify:
            t = time.perf_counter()
            app.action_show("verify")
            await pilot.pause()
            app.screen.action_run()
            while app.screen.running:
                await asyncio.sleep(0.1)
            report(
                "full verification in a child process",
                f"{time.perf_counter() - t:.1f} s: {app.screen.reports[id(app.view)].summary()[:60]}",
            )
    layer.close()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--write-tar":
        write_tar(sys.stdout.buffer, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inodes", type=int, default=100_000)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000, help="files in each directory of the layer")
    ap.add_argument("--verify", action="store_true", help="also time the full verification (about 20 s)")
    ap.add_argument(
        "--analysis",
        action="store_true",
        help="only the overview and the analysis screen (and analyze itself)",
    )
    args = ap.parse_args()
    path = build_layer(args.inodes, args.chunks, args.per_dir)
    print(f"bench_tui: {path.name}, {path.stat().st_size:,} bytes, {os.cpu_count()} cores")
    if args.analysis:
        # analyze as the CLI runs it, for the target beside the screen's figures. On a shared machine the
        # CPU seconds are the figure that does not depend on what the other users run.
        cpu = children_cpu()
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "nydus_inspect", "analyze", str(path)],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        print(
            f"  {'nydus-inspect analyze (the CLI, a process of its own)':<52} {time.perf_counter() - t:.1f} s"
            f" (CPU {children_cpu() - cpu:.1f} s)"
        )
    asyncio.run(run(path, args.verify, args.analysis, args.per_dir, args.inodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
