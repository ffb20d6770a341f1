"""Hostile inputs: time that must grow linearly, memory that must stay bounded (issue 18).

1. `unpack --to-dir` of about 21,000 entries at depth 10, 100 and 1,000 (the same number of entries, more
   of them directories as the tree deepens): the time per entry must not grow with depth.
2. Peak RSS of each command on the 4 GiB file made of one chunk repeated (a layer of about 1 MB), on the
   bootstrap of 4,000 nested 255-byte directory names and on the file with 20,000 hard links.

The inputs come from the test suite's hostile generator (tests/hostile.py).
Run: `make bench` or `python bench/bench_hostile.py [depth|memory]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import hostile  # noqa: E402
from _common import NYDUS, ROOT, load_note, run_once  # noqa: E402

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
            wall, kib = run_once([*NYDUS, "unpack", "-q", str(blob), "--to-dir", str(out)])
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
        ("20k hard links", "pack", ["pack", "-q", links_tar, "-o", links]),
        ("20k hard links", "diff", ["diff", links_tar, links]),
        ("20k hard links", "unpack -o -", ["unpack", "-q", links, "-o", "-"]),
        ("20k hard links", "unpack --to-dir", ["unpack", "-q", links, "--to-dir", out]),
    ]
    print(f"peak RSS by command ({load_note()})")
    print(f"{'input':<24} {'command':<18} {'seconds':>8} {'peak RSS MiB':>13}")
    worst = 0
    for what, name, args in runs:
        _rmtree(out)
        wall, kib = run_once([*NYDUS, *map(str, args)])
        (work / "bomb.tar").unlink(missing_ok=True)
        worst = max(worst, kib)
        print(f"{what:<24} {name:<18} {wall:>8.2f} {kib / 1024:>13.0f}")
    _rmtree(out)
    print(f"largest: {worst / 1024:.0f} MiB (target: under 256 MiB)")


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    which = sys.argv[1:] or ["depth", "memory"]
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-hostile-", dir=os.environ.get("NYDUS_BENCH_TMP")))
    try:
        if "depth" in which:
            depth_series(work, repeat)
        if "memory" in which:
            memory(work)
    finally:
        _rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
