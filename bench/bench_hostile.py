"""Hostile inputs: time that must grow linearly, memory that must stay bounded (issue 18).

1. `unpack --to-dir` of about 21,000 entries at depth 10, 100 and 1,000 (the same number of entries, more
   of them directories as the tree deepens): the time per entry must not grow with depth.
2. Peak RSS of each command on the 4 GiB file made of one chunk repeated (a layer of about 1 MB), on the
   bootstrap of 4,000 nested 255-byte directory names, on the file with 20,000 hard links and on the 2 GB
   tar of bench/make_rootfs.sh --big (when it is there; BENCH_BIG=0 skips it).
3. `cat` of every file through the mount (root and /dev/fuse) of 10,000, 100,000 and 200,000 empty files (in
   directories of 1,000), with the mount's read-ahead on and off: the time per file must not grow with the
   count (the growth exponent of time in count is 1.0 when linear). BENCH_MOUNT_FILES=10000,100000 picks the
   sizes.

The inputs come from the test suite's hostile generator (tests/hostile.py).
Run: `make bench` or `python bench/bench_hostile.py [depth|memory|mount]`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import hostile  # noqa: E402
from _common import BENCH_DIR, NYDUS, ROOT, load_note, run_once  # noqa: E402

ENTRIES = 21_000


def _rmtree(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=True)  # shutil.rmtree recurses once per level


def _nydus(*args) -> None:
    subprocess.run(
        [*NYDUS, *map(str, args)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )


def depth_series(work: Path, repeat: int) -> None:
    print(f"unpack --to-dir of ~{ENTRIES} entries by depth ({load_note()})")
    print(f"{'depth':>6} {'entries':>8} {'median s':>9} {'us/entry':>9} {'peak RSS MiB':>13}")
    for depth in (10, 100, 1000):
        per_level = ENTRIES // depth - 1
        tar = work / f"deep{depth}.tar"
        tar.write_bytes(hostile.deep_tree(depth, files_per_level=per_level))
        blob = work / f"deep{depth}.blob"
        _nydus("pack", "-q", tar, "-o", blob)
        walls, rss = [], 0
        for _ in range(repeat):
            out = work / "out"
            _rmtree(out)
            wall, kib, _ = run_once([*NYDUS, "unpack", "-q", str(blob), "--to-dir", str(out)])
            walls.append(wall)
            rss = max(rss, kib)
        _rmtree(work / "out")
        walls.sort()
        median = walls[len(walls) // 2]
        entries = depth * (per_level + 1)
        print(f"{depth:>6} {entries:>8} {median:>9.2f} {median / entries * 1e6:>9.1f} {rss / 1024:>13.0f}")


def memory(work: Path) -> None:
    """Peak RSS (GNU time) of each command on each input; none may pass 256 MiB."""
    bomb_tar, bomb = work / "bomb.tar.zst", work / "bomb.blob"
    next(hostile.dedup_bomb(4 << 30)).write(bomb_tar)
    deep, links_tar, links = work / "deep.boot", work / "links.tar", work / "links.blob"
    next(hostile.deep_layers()).write(deep)
    next(hostile.many_hardlinks()).write(links_tar)
    out = work / "out"
    runs = [
        ("4 GiB dedup file", "pack", ["pack", "-q", bomb_tar, "-o", bomb]),
        ("4 GiB dedup file", "unpack -o -", ["unpack", "-q", bomb, "-o", "-"]),
        ("4 GiB dedup file", "unpack -o FILE", ["unpack", "-q", bomb, "-o", work / "bomb.tar"]),
        ("4 GiB dedup file", "unpack --to-dir", ["unpack", "-q", bomb, "--to-dir", out]),
        ("4 GiB dedup file", "diff", ["diff", bomb_tar, bomb]),
        ("4 GiB dedup file", "verify --source", ["verify", "-q", bomb, "--source", bomb_tar]),
        ("4,000 x 255-byte dirs", "merge", ["merge", deep, "-o", work / "merged.boot"]),
        ("4,000 x 255-byte dirs", "verify", ["verify", "-q", deep]),
        ("4,000 x 255-byte dirs", "ls -R", ["ls", "-R", deep]),
        ("4,000 x 255-byte dirs", "unpack -o -", ["unpack", "-q", deep, "-o", "-"]),
        ("20k hard links", "pack", ["pack", "-q", links_tar, "-o", links]),
        ("20k hard links", "diff", ["diff", links_tar, links]),
        ("20k hard links", "unpack -o -", ["unpack", "-q", links, "-o", "-"]),
        ("20k hard links", "unpack --to-dir", ["unpack", "-q", links, "--to-dir", out]),
    ]
    big = BENCH_DIR / "big.tar"
    if big.exists() and os.environ.get("BENCH_BIG", "1") != "0":
        big_blob = work / "big.blob"
        runs += [
            ("2 GB tar", "pack", ["pack", "-q", big, "-o", big_blob]),
            ("2 GB tar", "unpack -o -", ["unpack", "-q", big_blob, "-o", "-"]),
            ("2 GB tar", "unpack --to-dir", ["unpack", "-q", big_blob, "--to-dir", out]),
            ("2 GB tar", "verify", ["verify", "-q", big_blob]),
            ("2 GB tar", "verify --source", ["verify", "-q", big_blob, "--source", big]),
            ("2 GB tar", "diff", ["diff", big, big_blob]),
            ("2 GB tar", "cat (50 MB file)", ["cat", big_blob, "/big/blob00.bin"]),
        ]
    print(f"peak RSS by command ({load_note()})")
    print(f"{'input':<24} {'command':<18} {'seconds':>8} {'peak RSS MiB':>13}")
    worst = 0
    for what, name, args in runs:
        _rmtree(out)
        wall, kib, _ = run_once([*NYDUS, *map(str, args)])
        (work / "bomb.tar").unlink(missing_ok=True)
        worst = max(worst, kib)
        print(f"{what:<24} {name:<18} {wall:>8.2f} {kib / 1024:>13.0f}")
    _rmtree(out)
    print(f"largest: {worst / 1024:.0f} MiB (target: under 256 MiB)")


def _empty_files_tar(path: Path, n: int) -> None:
    """A tar of ``n`` empty files, 1,000 to a directory."""
    with open(path, "wb") as f:
        for i in range(n):
            if i % 1000 == 0:
                f.write(hostile.member(b"d%04d/" % (i // 1000), typeflag=b"5", mode=0o755))
            f.write(hostile.member(b"d%04d/f%06d" % (i // 1000, i)))
        f.write(hostile.END)


def _cat_all(blob: Path, mp: Path, readahead: bool) -> float:
    """Seconds to cat every file of ``blob`` through a fresh mount (find lists them first, untimed)."""
    import time

    args = [] if readahead else ["--no-readahead"]
    _nydus("mount", *args, blob, mp, "--log-file", mp.parent / "mount.log")
    try:
        names = subprocess.run(
            ["find", ".", "-type", "f", "-print0"], cwd=mp / "rootfs", capture_output=True, check=True
        ).stdout
        t0 = time.perf_counter()
        subprocess.run(
            ["xargs", "-0", "cat"], input=names, cwd=mp / "rootfs", stdout=subprocess.DEVNULL, check=True
        )
        return time.perf_counter() - t0
    finally:
        _nydus("umount", mp)


def mount_series(work: Path, repeat: int) -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_MOUNT_FILES", "10000,100000,200000").split(",") if x]
    print(f"cat of every file through the mount, by file count ({load_note()})")
    print(f"{'files':>8} {'read-ahead s':>13} {'us/file':>8} {'off s':>7} {'us/file':>8} {'on/off':>7}")
    mp = work / "mnt"
    mp.mkdir()
    rows = []
    for n in sizes:
        tar, blob = work / f"empty{n}.tar", work / f"empty{n}.blob"
        _empty_files_tar(tar, n)
        _nydus("pack", "-q", tar, "-o", blob)
        tar.unlink()
        on, off = [], []
        for _ in range(repeat):  # alternating, so that machine noise hits both alike
            on.append(_cat_all(blob, mp, True))
            off.append(_cat_all(blob, mp, False))
        blob.unlink()
        t_on, t_off = sorted(on)[len(on) // 2], sorted(off)[len(off) // 2]
        rows.append((n, t_on))
        print(
            f"{n:>8} {t_on:>13.2f} {t_on / n * 1e6:>8.1f} {t_off:>7.2f} {t_off / n * 1e6:>8.1f} "
            f"{t_on / t_off:>6.2f}x"
        )
    for (n1, t1), (n2, t2) in zip(rows, rows[1:]):
        print(
            f"growth exponent {n1} -> {n2} files: {math.log(t2 / t1) / math.log(n2 / n1):.2f} (1.0 is linear)"
        )


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    which = sys.argv[1:] or ["depth", "memory", "mount"]
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-hostile-", dir=os.environ.get("NYDUS_BENCH_TMP")))
    try:
        if "depth" in which:
            depth_series(work, repeat)
        if "memory" in which:
            memory(work)
        if "mount" in which:
            mount_series(work, repeat)
    finally:
        _rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
