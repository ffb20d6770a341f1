"""How every command's cost grows with its input: series of generated layers, each ten times the last.

    python bench/bench_scale.py [--series inodes,chunks,distinct,bytes,layers] [--max-inodes N] [--max-chunks N]
                                [--max-gb N] [--no-mount] [--no-oracle]

Series (inputs are generated, most kept in $NYDUS_BENCH_DIR/scale for the next run, never committed):

  inodes   10k, 100k and 1M one-line files, 1,000 to a directory
  chunks   1M and 10M chunk records (4 KiB chunks; the data repeats every 65,536 blocks, so the blob
           stays small while the bootstrap's chunk table and every reader walk all the records); these
           tars (4 and 40 GB) are never stored: a child process writes them to the reader's stdin
  distinct the same, every chunk distinct: blob.meta, blob.digest and the dedup index hold 1M and 10M
           chunks too
  bytes    tars of 1, 3 and 10 GB: 50 MiB files of incompressible, compressible and mixed 1 MiB pieces
  layers   3, 10 and 30 layers of 5,000 files each (replacements and whiteouts), merged and analysed

For each layer: `pack`, `unpack -o`, `verify`, `ls -R --json`, `diff` (against the source tar),
`analyze --json`, and the mount (ready, `find`, `ls -lR`, a cold full `tar -cf - .`); for the layers series
`merge` and `analyze` of the whole image. Each row: wall seconds, user + system CPU seconds, peak
RSS; then the growth exponent between consecutive sizes, log(t2/t1) / log(n2/n1), of user CPU time (wall
time for the mount's workloads, which run in other processes) and of RSS. System time is printed, not
judged: on a VM the kernel's cost of the same reads varies threefold from one run to the next.
Target: every exponent <= 1.1, peak RSS under 256 MiB (the mount's chunk cache set to 64 MiB). Where
the real nydus tools (`make oracle`) do the same job (pack, mount), their series is printed beside ours.

One run of each command per size, three (the median reported) where it took under 30 s: on a shared
machine a short run's time can double from one run to the next. Each run starts with the page cache
dropped (as root; otherwise the report says the runs were warm), so every size reads its input from disk.
The TUI's figures at 1M inodes and 10M chunks come from
`bench_tui.py --inodes 1000000 --chunks 10000000 --per-dir 100000`.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, drop_caches, load_note, run_times  # noqa: E402

SCALE_DIR = BENCH_DIR / "scale"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MTIME = 1_700_000_000
RSS_BOUND_MIB = 256
EXPONENT_BOUND = 1.1


# ---------------------------------------------------------------------------- inputs
def _info(name: str, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.uname, ti.gname = MTIME, "root", "root"
    if is_dir:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    else:
        ti.mode, ti.size = 0o644, size
    return ti


def _write_atomically(path: Path, fill) -> Path:
    """Build ``path`` with ``fill(tarfile)`` unless it is there already (a killed run leaves no half tar)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    print(f"  generating {path.name} ...", flush=True)
    t0 = time.perf_counter()
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        fill(tf)
    tmp.rename(path)
    print(f"  generated in {time.perf_counter() - t0:.0f} s, {path.stat().st_size:,} bytes", flush=True)
    return path


def inodes_tar(n: int) -> Path:
    def fill(tf: tarfile.TarFile) -> None:
        ndirs = max(1, n // 1000)
        for d in range(ndirs):
            tf.addfile(_info(f"d{d:04d}", is_dir=True))
        for i in range(n):
            data = b"file %d\n" % i
            tf.addfile(_info(f"d{i * ndirs // n:04d}/f{i:07d}", len(data)), io.BytesIO(data))

    return _write_atomically(SCALE_DIR / f"inodes-{n}.tar", fill)


class _Blocks(io.RawIOBase):
    """``n`` 4 KiB blocks; block k starts with k mod ``period``, so the layer has n chunk records but at most
    ``period`` distinct chunks (all distinct without one)."""

    PERIOD = 65536

    def __init__(self, start: int, n: int, period: int | None = PERIOD) -> None:
        self.i, self.end, self.buf = start, start + n, b""
        self.period = period or 1 << 64

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self.buf) < len(b) and self.i < self.end:
            stop = min(self.end, self.i + 256)
            self.buf += b"".join(
                (k % self.period).to_bytes(8, "little") + bytes(4088) for k in range(self.i, stop)
            )
            self.i = stop
        m = min(len(b), len(self.buf))
        b[:m] = self.buf[:m]
        self.buf = self.buf[m:]
        return m


class Streamed:
    """A tar written by a child process as it is read (pack's, diff's and nydus-image's stdin): the 10M-chunk
    tar is 40 GB, about what the machines this runs on have free, and writing it costs longer than packing it."""

    def __init__(self, n: int, distinct: bool = False) -> None:
        self.n = n
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--emit-chunks", str(n)]
        if distinct:
            self.argv.append("--distinct")


def emit_chunks_tar(n: int, out: BinaryIO, distinct: bool = False) -> None:
    per_file = 1 << 20  # 4 GiB files: a chunk table of 1M records each
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(_info("c", is_dir=True))
        for f, k in enumerate(range(0, n, per_file)):
            m = min(per_file, n - k)
            tf.addfile(
                _info(f"c/f{f:03d}", m * 4096),
                io.BufferedReader(_Blocks(k, m, None if distinct else _Blocks.PERIOD), 1 << 20),
            )


class _Mixed(io.RawIOBase):
    """``size`` deterministic bytes in 1 MiB pieces: incompressible, compressible text, or half of each."""

    TEXT = b"nydus-inspect scale benchmark: the quick brown fox jumps over the lazy dog 0123456789\n" * 13000

    def __init__(self, seed: int, size: int) -> None:
        self.rng, self.left, self.buf = random.Random(seed), size, b""

    def readable(self) -> bool:
        return True

    def _piece(self) -> bytes:
        kind, mib = self.rng.randrange(3), 1 << 20
        off = self.rng.randrange(1000)
        if kind == 0:
            return self.rng.randbytes(mib)
        if kind == 1:
            return self.TEXT[off : off + mib]
        return self.rng.randbytes(mib // 2) + self.TEXT[off : off + mib // 2]

    def readinto(self, b) -> int:
        if not self.buf and self.left:
            self.buf = self._piece()[: self.left]
            self.left -= len(self.buf)
        m = min(len(b), len(self.buf))
        b[:m] = self.buf[:m]
        self.buf = self.buf[m:]
        return m


def bytes_tar(gb: int) -> Path:
    size = 50 << 20

    def fill(tf: tarfile.TarFile) -> None:
        tf.addfile(_info("big", is_dir=True))
        for i in range(gb * 1000 // 50):
            tf.addfile(_info(f"big/f{i:04d}.bin", size), io.BufferedReader(_Mixed(i, size), 1 << 20))

    return _write_atomically(SCALE_DIR / f"bytes-{gb}g.tar", fill)


def layer_tars(n: int) -> list[Path]:
    """``n`` layers of 5,000 files over 50 shared directories; each replaces half of the names the layer
    below wrote, deletes a few of its own files with whiteouts and makes one directory opaque."""
    out = []
    for i in range(n):

        def fill(tf: tarfile.TarFile, i: int = i) -> None:
            for d in range(50):
                tf.addfile(_info(f"d{d:02d}", is_dir=True))
                if i and d == i % 50:
                    tf.addfile(_info(f"d{d:02d}/.wh..wh..opq", 0), io.BytesIO(b""))
                for f in range(100):
                    name = f"f{i:02d}-{f:03d}" if f % 2 else f"shared-{f:03d}"
                    data = f"layer {i} dir {d} file {f}\n".encode() * (1 + f % 8)
                    tf.addfile(_info(f"d{d:02d}/{name}", len(data)), io.BytesIO(data))
                if i:
                    for f in range(1, 10, 2):
                        tf.addfile(_info(f"d{d:02d}/.wh.f{i - 1:02d}-{f:03d}", 0), io.BytesIO(b""))

        out.append(_write_atomically(SCALE_DIR / "layers" / f"layer-{i:02d}.tar", fill))
    return out


# ---------------------------------------------------------------------------- measuring
def oracle_dir() -> Path | None:
    proc = subprocess.run(["bash", str(ROOT / "oracle" / "build.sh")], stdout=subprocess.PIPE)
    lines = proc.stdout.decode().strip().splitlines()
    return Path(lines[-1]) if proc.returncode == 0 and lines else None


#: Whether the page cache could be dropped before each command (root only); the header says which.
COLD = {"dropped": True}
#: A command that ran in less than this many seconds is run twice more and the median of the three reported:
#: on a shared machine one short run can take twice as long as the next (the host's disk, other tenants).
REPEAT_UNDER = 30.0


#: A run's figures: wall s, user CPU s, system CPU s, peak RSS KiB.
Figures = tuple[float, float, float, int]


def repeated(once) -> Figures:
    """The medians of ``once()``'s times, run once or three times if it was short, and its highest RSS."""
    runs = [once()]
    if runs[0][0] < REPEAT_UNDER:
        runs += [once(), once()]
    mid = len(runs) // 2
    return (*(sorted(r[i] for r in runs)[mid] for i in range(3)), max(r[3] for r in runs))


def run_cold(cmd: list[str] | str, shell: bool = False, stdin=None) -> Figures:
    """The figures of one run. Earlier writes are synced and the page cache dropped first
    (untimed): every size reads its input from disk, where a warm small input beside a cold large one
    would put the cost of the disk into the exponent between them."""
    if not drop_caches(required=False):  # it syncs in any case
        COLD["dropped"] = False
    wall, rss, user, system = run_times(cmd, shell=shell, stdin=stdin)
    return wall, user, system, rss


def timed(cmd: list[str] | str, shell: bool = False) -> Figures:
    return repeated(lambda: run_cold(cmd, shell=shell))


def timed_on(tar: Path | Streamed, cmd, stdin_name: str = "-") -> Figures:
    """``timed(cmd(path))`` of a tar on disk, or of a streamed one given as ``stdin_name`` with the child's
    output on stdin (the child's own time is not counted: it is not a child of GNU time)."""
    if isinstance(tar, Path):
        return timed(cmd(str(tar)))

    def once() -> Figures:
        # The generator's exit status is not looked at: a reader that stops at the tar's end-of-archive
        # blocks leaves it an EPIPE on the rest of the last record, and a generator that failed midway
        # leaves a truncated tar, which fails the reader.
        with subprocess.Popen(tar.argv, stdout=subprocess.PIPE) as gen:
            try:
                return run_cold(cmd(stdin_name), stdin=gen.stdout)
            finally:
                gen.stdout.close()
                gen.kill()

    return repeated(once)


def mount_figures(blob: Path, work: Path, oracle: Path | None) -> dict[str, Figures]:
    """Mount ready, then cold find, ls -lR and full tar, each on a fresh mount: ours, and nydusd's beside."""
    import bench_mount

    class Ours(bench_mount.Nydus):
        sub = ""

        def mount_cmd(self, mp: Path) -> list[str]:
            return [
                *NYDUS,
                "mount",
                "--cache-size",
                "64M",
                "--log-file",
                str(work / "mount.log"),
                str(blob),
                str(mp),
            ]

    tools = [Ours({"blob": blob})]
    if oracle is not None:
        bench_mount.WORK = work
        tools.append(bench_mount.Nydusd({"blob": blob}, oracle))
    figures = {}
    mp = work / "mnt"
    mp.mkdir(exist_ok=True)
    for tool in tools:
        label = "mount" if isinstance(tool, Ours) else "nydusd"
        ready = tool.mount(mp)
        tool.umount(mp)
        figures[f"{label} ready"] = (ready, 0.0, 0.0, 0)
        for what, shell in (
            ("find", "find . | wc -l"),
            ("ls -lR", "ls -lR > /dev/null"),
            ("tar", "tar -cf - . | wc -c"),
        ):

            def once(tool=tool, shell: str = shell) -> Figures:
                wall, peak = bench_mount.run_workload(tool, mp, shell)
                return wall, 0.0, 0.0, peak

            figures[f"{label} {what}"] = repeated(once)
    return figures


def layer_figures(
    tar: Path | Streamed, work: Path, oracle: Path | None, mount: bool, chunk_size: str
) -> dict:
    blob = work / "layer.blob"
    blob.unlink(missing_ok=True)
    fig = {}
    fig["pack"] = timed_on(
        tar, lambda t: [*NYDUS, "pack", "-q", "--chunk-size", chunk_size, t, "-o", str(blob)]
    )
    if oracle is not None:
        theirs = work / "theirs.blob"
        theirs.unlink(missing_ok=True)
        import bench_oracle

        fig["nydus-image create"] = timed_on(
            tar, lambda t: bench_oracle.create_cmd(oracle, Path(t), theirs, chunk_size), "/dev/stdin"
        )
        theirs.unlink(missing_ok=True)
    # The tar goes to /dev/null: at 10M chunks it is as large as the input (40 GB), and both on disk at once
    # would not fit the machines this runs on.
    fig["unpack"] = timed(
        f"{shlex_join([*NYDUS, 'unpack', '-q', str(blob), '-o', '-'])} > /dev/null", shell=True
    )
    fig["verify"] = timed([*NYDUS, "verify", "-q", str(blob)])
    fig["ls -R --json"] = timed(
        f"{shlex_join([*NYDUS, 'ls', '-R', '--json', str(blob)])} > /dev/null", shell=True
    )
    fig["diff"] = timed_on(tar, lambda t: [*NYDUS, "diff", t, str(blob)])
    fig["analyze"] = timed(f"{shlex_join([*NYDUS, 'analyze', '--json', str(blob)])} > /dev/null", shell=True)
    if mount:
        fig.update(mount_figures(blob, work, oracle))
    blob.unlink(missing_ok=True)
    return fig


def layers_figures(tars: list[Path], work: Path) -> dict:
    blobs = []
    for i, tar in enumerate(tars):
        blob = work / f"layer-{i:02d}.blob"
        if not blob.exists():
            subprocess.run(
                [*NYDUS, "pack", "-q", str(tar), "-o", str(blob)],
                check=True,
                env=ENV,
                stdout=subprocess.DEVNULL,
            )
        blobs.append(blob)
    merged = work / "merged.boot"
    merged.unlink(missing_ok=True)
    fig = {"merge": timed([*NYDUS, "merge", "-o", str(merged), *map(str, blobs)])}
    fig["analyze"] = timed(
        f"{shlex_join([*NYDUS, 'analyze', '--json', '--blob-dir', str(work), *map(str, blobs)])} > /dev/null",
        shell=True,
    )
    return fig


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def report(series: str, sizes: list[int], unit: str, results: list[dict]) -> list[str]:
    """One table per series (a row per command, a column per size) and the verdicts it yields."""
    verdicts = []
    names = [n for n in results[0] if all(n in r for r in results)]
    head = "".join(f"{f'{s:,} {unit}':>34}" for s in sizes)
    print(
        f"\n== {series}: wall s / user + system CPU s / peak RSS MiB at each size; "
        "exponent of user CPU (or wall) and RSS growth"
    )
    print(f"{'command':<22}{head}   exponents (user CPU or wall, RSS)")
    for name in names:
        cells = "".join(
            f"{f'{w:.2f} / {u:.2f} + {y:.2f} / {r / 1024:.0f}':>34}"
            for w, u, y, r in (res[name] for res in results)
        )
        exps = []
        for (s1, r1), (s2, r2) in zip(zip(sizes, results), zip(sizes[1:], results[1:])):
            k = math.log(s2 / s1)
            # User CPU time where it was measured: the wall time of the bigger run takes whatever else
            # shares the machine, and the system time of reading and writing files here (a VM) varies
            # threefold between identical runs with the page cache dropped. The mount's workloads run in
            # other processes (no CPU counted here): their wall time is all there is.
            t = 1 if r1[name][1] > 0 and r2[name][1] > 0 else 0
            ew = math.log(max(r2[name][t], 1e-3) / max(r1[name][t], 1e-3)) / k
            er = math.log(max(r2[name][3], 1) / max(r1[name][3], 1)) / k if r1[name][3] else 0.0
            exps.append(f"{ew:.2f},{er:.2f}")
            if ew > EXPONENT_BOUND and not name.startswith(("nydusd", "nydus-image")):
                what = "user CPU" if t else "wall"
                verdicts.append(
                    f"{series}: {name} {what} time grows with exponent {ew:.2f} from {s1:,} to {s2:,} {unit}"
                )
        peak = max(res[name][3] for res in results) / 1024
        if peak > RSS_BOUND_MIB and not name.startswith(("nydusd", "nydus-image")):
            verdicts.append(f"{series}: {name} peaks at {peak:.0f} MiB (bound {RSS_BOUND_MIB})")
        print(f"{name:<22}{cells}   {' '.join(exps)}")
    return verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", default="inodes,chunks,distinct,bytes,layers")
    ap.add_argument("--max-inodes", type=int, default=1_000_000)
    ap.add_argument("--max-chunks", type=int, default=10_000_000)
    ap.add_argument("--max-gb", type=int, default=10)
    ap.add_argument("--max-layers", type=int, default=30)
    ap.add_argument(
        "--no-mount", action="store_true", help="skip the mount figures (they need root and FUSE)"
    )
    ap.add_argument("--no-oracle", action="store_true", help="skip the real nydus tools' series")
    ap.add_argument("--emit-chunks", type=int, metavar="N", help=argparse.SUPPRESS)
    ap.add_argument("--distinct", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.emit_chunks:
        emit_chunks_tar(args.emit_chunks, sys.stdout.buffer, args.distinct)
        return 0
    oracle = None if args.no_oracle else oracle_dir()
    mount = not args.no_mount and os.geteuid() == 0
    print(f"nydus-inspect scale series; {load_note()}; real tools: {oracle or 'not used'}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-scale-", dir=BENCH_DIR if BENCH_DIR.exists() else None))
    verdicts: list[str] = []
    try:
        wanted = args.series.split(",")
        if "inodes" in wanted:
            sizes = [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_inodes]
            res = [layer_figures(inodes_tar(n), work, oracle, mount, "0x100000") for n in sizes]
            verdicts += report("inodes", sizes, "inodes", res)
        for name in ("chunks", "distinct"):
            if name in wanted:
                sizes = [n for n in (1_000_000, 10_000_000) if n <= args.max_chunks]
                res = [
                    layer_figures(Streamed(n, name == "distinct"), work, oracle, mount, "0x1000")
                    for n in sizes
                ]
                verdicts += report(name, sizes, "chunks", res)
        if "bytes" in wanted:
            sizes = [n for n in (1, 3, 10) if n <= args.max_gb]
            res = [layer_figures(bytes_tar(n), work, oracle, mount, "0x100000") for n in sizes]
            verdicts += report("bytes", sizes, "GB", res)
        if "layers" in wanted:
            sizes = [n for n in (3, 10, 30) if n <= args.max_layers]
            tars = layer_tars(max(sizes))
            res = [layers_figures(tars[:n], work) for n in sizes]
            verdicts += report("layers", sizes, "layers", res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "page cache: "
        + ("dropped before every command" if COLD["dropped"] else "warm (dropping it needs root)")
    )
    print(
        "\n".join(verdicts)
        if verdicts
        else "every series grows at most linearly and stays under the RSS bound"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
