"""targz-ref (zran) reading, side by side: `cat` of a 50 MB file and a cold full `unpack` of a layer read in
place from its .tar.gz (targz-ref) vs the same tar packed as a tar-rafs layer, and vs the real nydusd
mounting the same zran layer (`make oracle`; the mount is made before timing, each run on a fresh mount so
nydusd's cache is cold).

The source is the Debian rootfs tar (`bash bench/make_rootfs.sh`) when present, with a 50 MB file added;
else a generated tar of that file and 2000 small ones. Run: `python bench/bench_zran.py`.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import BENCH_DIR, NYDUS, measure, ratio, table  # noqa: E402

WORK = BENCH_DIR / "zran"
BIG = "big-50m.bin"


def make_source(path: Path) -> None:
    """The source tar: the Debian rootfs (or small generated files) and a 50 MB half-compressible file."""
    base = BENCH_DIR / "rootfs.tar"
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        if base.is_file():
            with tarfile.open(base) as src:
                for m in src:
                    tf.addfile(m, src.extractfile(m) if m.isreg() else None)
        else:
            for i in range(2000):
                data = f"small file {i}\n".encode() * (1 + i % 50)
                ti = tarfile.TarInfo(f"small/{i:04d}.txt")
                ti.size, ti.mtime = len(data), 1_700_000_000
                tf.addfile(ti, io.BytesIO(data))
        block = os.urandom(1 << 16) + b"the quick brown fox jumps over the lazy dog\n" * 1500
        data = (block * (50_000_000 // len(block) + 1))[:50_000_000]
        ti = tarfile.TarInfo(BIG)
        ti.size, ti.mtime = len(data), 1_700_000_000
        tf.addfile(ti, io.BytesIO(data))
    tmp.rename(path)


def main() -> None:
    from oracle import Oracle, find_oracle

    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / "src.tar"
    if not src.exists():
        make_source(src)
    gz = WORK / "src.tar.gz"
    if not gz.exists():
        with open(src, "rb") as f, gzip.GzipFile(gz, "wb", compresslevel=6, mtime=0) as g:
            shutil.copyfileobj(f, g, 1 << 20)
    where = find_oracle()
    if where is None:
        raise SystemExit("the real nydus tools are not built: make oracle")
    oracle = Oracle(where)
    ref = WORK / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    _, meta = oracle.create(gz, ref, "--type", "targz-ref", "--blob-inline-meta", "--features", "blob-toc")
    # The same layer, separate, for nydusd: bootstrap, meta blob and the gzip named by its id.
    sep = ref / "sep"
    sep.mkdir()
    boot = ref / "boot"
    oracle.run(
        "nydus-image",
        "create",
        "--log-level",
        "warn",
        "--type",
        "targz-ref",
        "--bootstrap",
        boot,
        "--blob-dir",
        sep,
        gz,
    )
    import hashlib

    h = hashlib.sha256()
    with open(gz, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    os.link(gz, sep / h.hexdigest())
    rafs = WORK / "rafs.blob"
    if not rafs.exists():
        import subprocess

        subprocess.run(
            [*NYDUS, "pack", src, "-o", rafs],
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )

    rows = [
        measure("cat 50MB: targz-ref (ours)", [*NYDUS, "cat", meta, "--blob", gz, "/" + BIG], repeat=3),
        measure("cat 50MB: tar-rafs (ours)", [*NYDUS, "cat", rafs, "/" + BIG], repeat=3),
    ]
    n = 0

    def nydusd_run(cmd_of) -> dict:
        nonlocal n
        walls = []
        from _common import run_once

        rss, cpu = [], []
        for _ in range(3):
            n += 1
            with oracle.mount(boot, sep, WORK / f"nydusd-{n}") as mnt:
                w, r, c = run_once(cmd_of(mnt), shell=True)
            walls.append(w)
            rss.append(r)
            cpu.append(c)
            shutil.rmtree(WORK / f"nydusd-{n}", ignore_errors=True)
        return walls, rss, cpu

    from _common import _row

    rows.append(_row("cat 50MB: nydusd (zran, cold)", *nydusd_run(lambda m: f"cat '{m}/{BIG}' > /dev/null")))
    rows += [
        measure(
            "full tar: targz-ref (ours)", [*NYDUS, "unpack", meta, "--blob", gz, "-o", "/dev/null"], repeat=3
        ),
        measure("full tar: tar-rafs (ours)", [*NYDUS, "unpack", rafs, "-o", "/dev/null"], repeat=3),
    ]
    rows.append(
        _row(
            "full tar: nydusd (zran, cold)", *nydusd_run(lambda m: f"tar -C '{m}' -cf - . | cat > /dev/null")
        )
    )
    table(rows)
    print()
    for a, b in [
        ("cat 50MB: targz-ref (ours)", "cat 50MB: tar-rafs (ours)"),
        ("cat 50MB: targz-ref (ours)", "cat 50MB: nydusd (zran, cold)"),
        ("full tar: targz-ref (ours)", "full tar: tar-rafs (ours)"),
        ("full tar: targz-ref (ours)", "full tar: nydusd (zran, cold)"),
    ]:
        print(f"{a} / {b}: {ratio(rows, a, b):.2f}x")


if __name__ == "__main__":
    main()
