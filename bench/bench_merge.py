"""merge: 20 nydus layers of 5,000 small files each -> one bootstrap (issue 3).

Target: under 3 s on the 2-core machine (median of 5 runs of the whole command, Python start-up
included). The layers overlap the way image layers do: every layer writes into the same 50 directories,
replaces some files of the layers below, deletes some with ``.wh.NAME`` and one directory per layer is
opaque. The tars are packed once and cached under $NYDUS_BENCH_DIR/merge20/ (default /var/tmp/nydus-bench).
Run: `make bench` or `python bench/bench_merge.py` (BENCH_REPEAT=N to change the 5).
"""

from __future__ import annotations

import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, load_note, measure, table  # noqa: E402

LAYERS, FILES, DIRS = 20, 5000, 50
TARGET = 3.0
WORK = BENCH_DIR / "merge20"
VERSION = "v1"  # bump when the generated layers change


def _add(tf: tarfile.TarFile, name: str, data: bytes | None, mode: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = mode, mtime
    if data is None:
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    else:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def make_layer(i: int, path: Path) -> None:
    """Layer ``i``: 5,000 files over the 50 shared directories, with replacements and whiteouts."""
    rng = random.Random(i)
    mtime = 1_700_000_000 + i
    tmp = path.with_suffix(".tmp")
    per_dir = FILES // DIRS
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, ".", None, 0o755, mtime)
        for d in range(DIRS):
            dname = f"d{d:02d}"
            _add(tf, dname, None, 0o755, mtime)
            if i and d == i % DIRS:
                _add(tf, f"{dname}/.wh..wh..opq", b"", 0o644, mtime)
            for f in range(per_dir):
                # Half the names are this layer's own, half replace a name an earlier layer wrote.
                name = f"f{i:02d}-{f:03d}" if f % 2 else f"shared-{f:03d}"
                data = f"layer {i} dir {d} file {f} {rng.random()}\n".encode() * (1 + f % 8)
                _add(tf, f"{dname}/{name}", data, 0o644, mtime)
            if i:
                for f in range(1, 10, 2):  # delete a few of the layer below's own files
                    _add(tf, f"{dname}/.wh.f{i - 1:02d}-{f:03d}", b"", 0o644, mtime)
    tmp.rename(path)


def ensure_layers() -> list[Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    stamp = WORK / "VERSION"
    if not stamp.exists() or stamp.read_text() != VERSION:
        for p in WORK.iterdir():
            p.unlink()
        stamp.write_text(VERSION)
    blobs = []
    for i in range(LAYERS):
        tar, blob = WORK / f"layer{i:02d}.tar", WORK / f"layer{i:02d}.blob"
        if not blob.exists():
            if not tar.exists():
                make_layer(i, tar)
            subprocess.run(
                [*NYDUS, "pack", "-q", str(tar), "-o", str(blob)],
                check=True,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            tar.unlink()
        blobs.append(blob)
    return blobs


def cpu_seconds(cmd: list[str], repeat: int) -> list[float]:
    """User + system CPU seconds of each run: unlike wall time, this does not grow when the machine is shared."""
    out = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return out


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    blobs = ensure_layers()
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-merge-"))
    try:
        out = work / "merged.boot"
        cmd = [*NYDUS, "merge", *map(str, blobs), "-o", str(out)]
        rows = [
            measure("nydus-inspect merge (20 x 5k)", cmd, repeat),
            measure("python -c pass (floor)", [sys.executable, "-c", "pass"], repeat),
        ]
        cpu = statistics.median(cpu_seconds(cmd, repeat))
        print(
            f"merge: {LAYERS} layers x {FILES} files, {sum(b.stat().st_size for b in blobs)} bytes of blobs; "
            f"{load_note()}"
        )
        table(rows)
        median = rows[0]["median"]
        print(f"merged bootstrap {out.stat().st_size} bytes; merge CPU time (user + sys) median {cpu:.3f} s")
        print(
            f"merge median {median:.3f} s (target < {TARGET:.1f} s): {'ok' if median < TARGET else 'MISSED'}"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
