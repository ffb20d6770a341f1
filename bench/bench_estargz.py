"""eStargz: our FUSE mount of the eStargz layer itself vs the real nydusd on our estargz-ref bootstrap over the
same blob.

The layer is the Debian minbase rootfs tar (bench/make_rootfs.sh) plus one 64 MiB file of mixed data, written
by estargz-build (`make oracle`; the stargz snapshotter's estargz module, 4 MiB chunks). Each repetition
mounts both afresh and drops the page cache before each measurement:

  cat big      cold `cat` of the 64 MiB file into /dev/null
  tar          cold `tar -cf - .` of the whole tree, piped into wc

Figures are medians; the two tools take turns within each repetition. Ratios are ours / nydusd's.

Run (root): `python bench/bench_estargz.py`. BENCH_REPEAT sets repetitions (default 3).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import drop_caches, ensure_rootfs  # noqa: E402

from oracle import Oracle, find_oracle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIG = 64 << 20
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))


def big_file() -> bytes:
    """Deterministic data, half of it compressible, in 1 MiB pieces."""
    rnd = random.Random(7)
    out = bytearray()
    for i in range(BIG >> 20):
        out += rnd.randbytes(1 << 19) + bytes([i & 0xFF]) * (1 << 19)
    return bytes(out)


def layer_tar(rootfs_tar: Path, out: Path) -> None:
    shutil.copy(rootfs_tar, out)
    data = big_file()
    # Append to the tar: drop its end-of-archive blocks first (tarfile's append mode does that).
    with tarfile.open(out, "a") as tf:
        ti = tarfile.TarInfo("bench-big.bin")
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
        tf.addfile(ti, io.BytesIO(data))


def timed(cmd: str, cwd: Path) -> float:
    drop_caches()
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], env=env, check=True, capture_output=True
    )


def main() -> int:
    where = find_oracle()
    if where is None or not (where / "estargz-build").exists():
        print("bench_estargz: the oracle tools are not built: run `make oracle`", file=sys.stderr)
        return 2
    oracle = Oracle(where)
    _, rootfs_tar = ensure_rootfs()
    with tempfile.TemporaryDirectory(prefix="bench-estargz-") as tmp:
        work = Path(tmp)
        src = work / "layer.tar"
        layer_tar(rootfs_tar, src)
        layer = work / "layer.tar.gz"
        made = json.loads(
            subprocess.run([str(where / "estargz-build"), src, layer], check=True, capture_output=True).stdout
        )
        blobs = work / "blobs"
        blobs.mkdir()
        boot = blobs / "layer.boot"
        cli("pack", "--type", "estargz-ref", layer, "-o", boot)
        os.link(layer, blobs / made["digest"].removeprefix("sha256:"))
        want = hashlib.sha256(big_file()).hexdigest()
        times: dict[str, dict[str, list[float]]] = {
            "ours": {"cat big": [], "tar": []},
            "nydusd": {"cat big": [], "tar": []},
        }
        for rep in range(REPEAT):
            # ours: the eStargz layer itself
            mp = work / f"ours{rep}"
            mp.mkdir()
            cli("mount", layer, mp, "--raw-whiteouts")
            try:
                root = mp / "rootfs"
                times["ours"]["cat big"].append(timed("cat bench-big.bin > /dev/null", root))
                times["ours"]["tar"].append(timed("tar -cf - . | wc -c", root))
                if rep == 0:
                    assert hashlib.sha256((root / "bench-big.bin").read_bytes()).hexdigest() == want
            finally:
                cli("umount", mp)
            # nydusd: our estargz-ref bootstrap over the same blob
            with oracle.mount(boot, blobs, work / f"nydusd{rep}") as mnt:
                times["nydusd"]["cat big"].append(timed("cat bench-big.bin > /dev/null", mnt))
                times["nydusd"]["tar"].append(timed("tar -cf - . | wc -c", mnt))
                if rep == 0:
                    assert hashlib.sha256((mnt / "bench-big.bin").read_bytes()).hexdigest() == want
    print(f"eStargz layer: Debian minbase + {BIG >> 20} MiB file, {REPEAT} repetitions, medians (s)")
    print(f"{'measure':<10} {'ours':>8} {'nydusd':>8} {'ratio':>7}")
    for what in ("cat big", "tar"):
        a, b = statistics.median(times["ours"][what]), statistics.median(times["nydusd"][what])
        print(f"{what:<10} {a:>8.3f} {b:>8.3f} {a / b:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
