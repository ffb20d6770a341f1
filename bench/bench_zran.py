"""targz-ref (zran) reading, side by side: `cat` of a 50 MB file and a cold full `unpack` of a layer read in
place from its .tar.gz (targz-ref) vs the same tar packed as a tar-rafs layer, and vs the real nydusd
mounting the same zran layer (`make oracle`; the mount is made before timing, each run on a fresh mount so
nydusd's cache is cold). The three take turns, each run after the page cache is dropped (root), and the
50 MB file each gives is checked against the source once before timing.

The source is the Debian rootfs tar (`bash bench/make_rootfs.sh`) when present, with a 50 MB file added;
else a generated tar of that file and 2000 small ones. Run: `python bench/bench_zran.py`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import (  # noqa: E402
    BENCH_DIR,
    NYDUS,
    ROOT,
    _row,
    drop_caches,
    load_note,
    ratio,
    run_once,
    sha256_of,
    table,
)

WORK = BENCH_DIR / "zran"
REPEAT = 3
#: Loads the modules a cat or unpack of a targz-ref or tar-rafs layer runs, reading no layer.
WARM = [
    sys.executable,
    "-c",
    "import nydus_inspect.cli, nydus_inspect.cli_ops, nydus_inspect.layer, nydus_inspect.unpack, "
    "nydus_inspect.chunks.zran, nydus_inspect.targz, zstandard",
]
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
    os.link(gz, sep / sha256_of(gz))
    rafs = WORK / "rafs.blob"
    if not rafs.exists():
        import subprocess

        subprocess.run(
            [*NYDUS, "pack", src, "-o", rafs],
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )

    # The 50 MB file as every reader must give it, checked once before timing.
    with tarfile.open(src) as tf:
        want = hashlib.sha256(tf.extractfile(BIG).read()).hexdigest()
    ours_cat = {
        "targz-ref (ours)": [*NYDUS, "cat", meta, "--blob", gz, "/" + BIG],
        "tar-rafs (ours)": [*NYDUS, "cat", rafs, "/" + BIG],
    }
    ours_tar = {
        "targz-ref (ours)": [*NYDUS, "unpack", meta, "--blob", gz, "-o", "/dev/null"],
        "tar-rafs (ours)": [*NYDUS, "unpack", rafs, "-o", "/dev/null"],
    }
    import subprocess

    for name, cmd in ours_cat.items():
        out = subprocess.run(
            cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        ).stdout
        assert hashlib.sha256(out).hexdigest() == want, f"{name}: cat gave other bytes"
    with oracle.mount(boot, sep, WORK / "nydusd-check") as mnt:
        assert sha256_of(Path(mnt) / BIG) == want, "nydusd: cat gave other bytes"
    shutil.rmtree(WORK / "nydusd-check", ignore_errors=True)

    mounts = 0

    def nydusd(shell: str) -> tuple[float, int, float]:
        """One run through a fresh nydusd mount (its cache empty), made before the clock starts."""
        nonlocal mounts
        mounts += 1
        work = WORK / f"nydusd-{mounts}"
        with oracle.mount(boot, sep, work) as mnt:
            drop_caches()
            got = run_once(shell.format(mnt=mnt), shell=True)
        shutil.rmtree(work, ignore_errors=True)
        return got

    def ours(cmd) -> tuple[float, int, float]:
        drop_caches()
        # The program itself warm, as nydusd's is (mounted before the drop): only the layer is read cold.
        subprocess.run(WARM, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return run_once(cmd)

    # Turns (A B C A B C ...), each run cold: the page cache dropped before it, so each reads its input from
    # disk as a first read of a layer does; the drift of a shared machine's load is spread over all three.
    runs: dict[str, list[tuple[float, int, float]]] = {}
    for _ in range(REPEAT):
        for what, cmds, shell in (
            ("cat 50MB", ours_cat, f"cat '{{mnt}}/{BIG}' > /dev/null"),
            ("full tar", ours_tar, "tar -C '{mnt}' -cf - . | cat > /dev/null"),
        ):
            for name, cmd in cmds.items():
                runs.setdefault(f"{what}: {name}", []).append(ours(cmd))
            runs.setdefault(f"{what}: nydusd (zran)", []).append(nydusd(shell))
    rows = [_row(name, *map(list, zip(*got))) for name, got in runs.items()]
    print(f"cold runs (page cache dropped before each), {REPEAT} turns; {load_note()}")
    table(rows)
    print()
    for a, b in [
        ("cat 50MB: targz-ref (ours)", "cat 50MB: tar-rafs (ours)"),
        ("cat 50MB: targz-ref (ours)", "cat 50MB: nydusd (zran)"),
        ("full tar: targz-ref (ours)", "full tar: tar-rafs (ours)"),
        ("full tar: targz-ref (ours)", "full tar: nydusd (zran)"),
    ]:
        print(f"{a} / {b}: {ratio(rows, a, b):.2f}x")


if __name__ == "__main__":
    main()
