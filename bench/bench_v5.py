"""RAFS v5 with data, on the Debian rootfs: our `ls -R --json` of the v5 layer beside `nydus-image check` (its
walk of the same bootstrap), and our `unpack` of the v5 layer beside that of the v6 layer of the same tar
(the cost of reading v5 through the v6 model's interface).

Prints medians and ratios (no targets asserted). Run: `make bench` or `python bench/bench_v5.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, ensure_rootfs, load_note, measure_together, ratio, table  # noqa: E402


def oracle_bin() -> Path | None:
    env = os.environ.get("NYDUS_ORACLE")
    if env:
        return Path(env)
    found = sorted((Path.home() / ".cache" / "nydus-inspect" / "oracle").glob("nydus-*/bin"))
    return found[0] if found else None


def create(nydus_image: Path, tar: Path, work: Path, version: str) -> tuple[Path, Path]:
    """nydus-image create --fs-version VERSION, the bootstrap apart; the blob named by its id in ``work``/blobs."""
    boot, blob = work / f"v{version}.boot", work / f"v{version}.blob"
    if not boot.exists():
        subprocess.run(
            [nydus_image, "create", "--log-level", "warn", "--type", "tar-rafs", "--fs-version", version]
            + ["--bootstrap", boot, "--blob", blob, tar],
            check=True,
        )
    info = subprocess.run(
        [*NYDUS, "info", "--json", boot],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    (ent,) = json.loads(info.stdout)["bootstrap"]["blobs"]
    blobs = work / f"blobs-v{version}"
    blobs.mkdir(exist_ok=True)
    if not (blobs / ent["blob_id"]).exists():
        os.link(blob, blobs / ent["blob_id"])
    return boot, blobs


def main() -> int:
    bin_dir = oracle_bin()
    if bin_dir is None:
        print("the real nydus tools are not built (make oracle): nothing to compare with")
        return 0
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    _, tar = ensure_rootfs()
    work = BENCH_DIR / "v5"
    work.mkdir(parents=True, exist_ok=True)
    v5, blobs5 = create(bin_dir / "nydus-image", tar, work, "5")
    v6, blobs6 = create(bin_dir / "nydus-image", tar, work, "6")
    # nydus-image unpack aborts on a FIFO (the rootfs has some): the peer for the tree walk is its check.
    walk = measure_together(
        [
            ("ours ls -R --json v5", [*NYDUS, "ls", "-R", "--json", str(v5)]),
            (
                "nydus-image check v5",
                [str(bin_dir / "nydus-image"), "check", "--log-level", "warn", "-B", str(v5)],
            ),
        ],
        repeat=repeat,
    )
    print(f"the Debian rootfs as RAFS v5: walking the tree ({load_note()})")
    table(walk, baseline="nydus-image check v5")
    outs = {name: work / f"{name}.tar" for name in ("ours unpack v5", "ours unpack v6")}
    rows = measure_together(
        [
            (name, [*NYDUS, "unpack", str(boot), "--blob-dir", str(blobs), "-o", str(outs[name])])
            for name, boot, blobs in (("ours unpack v5", v5, blobs5), ("ours unpack v6", v6, blobs6))
        ],
        repeat=repeat,
        outputs=outs,
    )
    print("unpack, every chunk read and checked: v5 through the v6 model's interface, and v6")
    table(rows, baseline="ours unpack v6")
    print(
        f"ls -R ours / nydus-image check: {ratio(walk, 'ours ls -R --json v5', 'nydus-image check v5'):.2f}x"
    )
    print(f"unpack v5 / v6: {ratio(rows, 'ours unpack v5', 'ours unpack v6'):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
