"""Lazy reading: `info`, `ls /` and `ls -R --json` on a layer of 100k inodes (issue 2).

Targets: `info` and `ls /` under 0.3 s and 100 MB RSS; `ls -R --json` streams (first output long before
the end, memory flat). Also prints the `python -c pass` floor and `dump.erofs` (erofs-utils) on the same
bootstrap for scale. Run: `make bench` or `python bench/bench_read.py`.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, PY, ROOT, load_note, measure, table  # noqa: E402

DIRS, FILES_PER_DIR = 500, 200  # 100k files + 500 dirs


def make_tar(path: Path) -> None:
    rng = random.Random(100_000)
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(DIRS):
            info = tarfile.TarInfo(f"d{d:04d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(info)
            for f in range(FILES_PER_DIR):
                data = f"file {d}/{f} {rng.random()}\n".encode()
                info = tarfile.TarInfo(f"d{d:04d}/file-{f:04d}.txt")
                info.size, info.mode, info.mtime, info.uid = len(data), 0o644, 1_700_000_000, 1000 + f % 7
                tf.addfile(info, io.BytesIO(data))
    tmp.rename(path)


def first_output_latency(cmd: list[str]) -> tuple[float, float, int]:
    """(seconds to the first output byte, total seconds, bytes) of a streaming command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    n = len(first)
    while chunk := proc.stdout.read(1 << 20):
        n += len(chunk)
    proc.wait()
    return t_first, time.perf_counter() - t0, n


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "7"))
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tar = BENCH_DIR / "inodes-100k.tar"
    blob = BENCH_DIR / "inodes-100k.blob"
    boot = BENCH_DIR / "inodes-100k.boot"
    if not tar.exists():
        make_tar(tar)
    if not blob.exists() or not boot.exists():
        subprocess.run(
            [*NYDUS, "pack", "-q", str(tar), "-o", str(blob), "--bootstrap", str(boot)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    print(
        f"layer: {blob} ({blob.stat().st_size} bytes), bootstrap {boot.stat().st_size} bytes, "
        f"{DIRS * FILES_PER_DIR + DIRS + 1} inodes; {load_note()}"
    )
    rows = [
        measure("python -c pass (floor)", [PY, "-c", "pass"], repeat),
        measure("nydus-inspect info BLOB", [*NYDUS, "info", str(blob)], repeat),
        measure("nydus-inspect ls BLOB /", [*NYDUS, "ls", str(blob), "/"], repeat),
        measure("nydus-inspect info BOOT", [*NYDUS, "info", str(boot)], repeat),
        measure("nydus-inspect ls BOOT /", [*NYDUS, "ls", str(boot), "/"], repeat),
        measure("nydus-inspect ls -R --json BOOT", [*NYDUS, "ls", "-R", "--json", str(boot)], 3),
    ]
    dump = shutil.which("dump.erofs")
    if dump:
        dev = BENCH_DIR / "inodes-100k.zero"
        with open(dev, "wb") as f:
            f.truncate(1 << 30)
        rows.append(
            measure(
                "dump.erofs --ls --path=/ (C peer)",
                [dump, f"--device={dev}", "--ls", "--path=/", str(boot)],
                repeat,
            )
        )
    table(rows)
    t_first, total, n = first_output_latency([*NYDUS, "ls", "-R", "--json", str(boot)])
    print(f"ls -R --json streams: first byte after {t_first:.3f} s, all {n} bytes after {total:.3f} s")
    for r in rows[1:5]:
        ok = r["median"] < 0.3 and r["rss_kib"] < 100 * 1024
        print(
            f"{r['name']}: {r['median']:.3f} s, {r['rss_kib'] / 1024:.1f} MiB -> {'meets' if ok else 'MISSES'} "
            "the 0.3 s / 100 MB target"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
