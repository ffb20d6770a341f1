"""pack / unpack on a real Debian minbase rootfs, side by side with zstd and mksquashfs.

Targets (issue 7): pack <= 1.0x mksquashfs and <= 2.0x `zstd -3 -T2` of the same tar;
unpack <= 2.0x `zstd -d` of the same bytes. Run: `make bench` or `python bench/bench_pack.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH_DIR,
    NYDUS,
    ROOT,
    ensure_rootfs,
    load_note,
    measure,
    measure_together,
    ratio,
    table,
)


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    rootfs, tar = ensure_rootfs()
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-"))
    try:
        blob, zst, sq, back = work / "l.blob", work / "l.tar.zst", work / "l.sqfs", work / "back.tar"
        rows = measure_together(
            [
                ("nydus-inspect pack (zstd)", [*NYDUS, "pack", "-q", str(tar), "-o", str(blob)]),
                ("zstd -3 -T2", ["zstd", "-3", "-T2", "-q", "-f", str(tar), "-o", str(zst)]),
                (
                    "mksquashfs zstd-3 -b 1M -processors 2",
                    [
                        "mksquashfs",
                        str(rootfs),
                        str(sq),
                        "-comp",
                        "zstd",
                        "-Xcompression-level",
                        "3",
                        "-b",
                        "1M",
                        "-processors",
                        "2",
                        "-noappend",
                        "-quiet",
                        "-no-progress",
                    ],
                ),
            ],
            repeat,
            outputs={
                "nydus-inspect pack (zstd)": blob,
                "zstd -3 -T2": zst,
                "mksquashfs zstd-3 -b 1M -processors 2": sq,
            },
        )
        print(f"pack: {tar} ({tar.stat().st_size} bytes); {load_note()}")
        table(rows, baseline="mksquashfs zstd-3 -b 1M -processors 2")
        sizes = {n: p.stat().st_size for n, p in (("nydus blob", blob), ("tar.zst", zst), ("squashfs", sq))}
        print("output sizes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        print(f"pack / mksquashfs = {ratio(rows, rows[0]['name'], rows[2]['name']):.2f}x (target <= 1.0x)")
        print(f"pack / zstd -T2   = {ratio(rows, rows[0]['name'], rows[1]['name']):.2f}x (target <= 2.0x)")
        print()
        urows = measure_together(
            [
                ("nydus-inspect unpack -o tar", [*NYDUS, "unpack", "-q", str(blob), "-o", str(back)]),
                ("zstd -d", ["zstd", "-d", "-q", "-f", str(zst), "-o", str(work / "d.tar")]),
            ],
            repeat,
            outputs={"nydus-inspect unpack -o tar": back, "zstd -d": work / "d.tar"},
        )
        table(urows, baseline="zstd -d")
        print(f"unpack / zstd -d  = {ratio(urows, urows[0]['name'], urows[1]['name']):.2f}x (target <= 2.0x)")
        print()
        # Streaming: a ~2 GB layer must pack in bounded memory (target: peak RSS < 300 MB).
        big = BENCH_DIR / "big.tar"
        if not big.exists():
            subprocess.run(["bash", str(ROOT / "bench" / "make_rootfs.sh"), "--big"], check=True)
        mrows = [
            measure(
                "nydus-inspect pack 2 GB tar",
                [*NYDUS, "pack", "-q", str(big), "-o", str(work / "big.blob")],
                1,
            ),
            measure(
                "nydus-inspect unpack 2 GB",
                [*NYDUS, "unpack", "-q", str(work / "big.blob"), "-o", str(work / "big.back.tar")],
                1,
            ),
        ]
        table(mrows)
        print(
            f"pack of {big.stat().st_size} bytes: peak RSS {mrows[0]['rss_kib'] / 1024:.1f} MiB (target < 300 MB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
