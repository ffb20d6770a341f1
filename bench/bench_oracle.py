"""nydus-inspect against the real nydus tools (built by `make oracle`), in turns in one run, on the Debian
minbase tar and on the ~2 GB tar:

  pack     `nydus-inspect pack` vs `nydus-image create --type tar-rafs --blob-inline-meta --features
           blob-toc --fs-version 6` with the same compressor, digester and chunk size
  unpack   `nydus-inspect unpack -o TAR` vs `nydus-image unpack` of the same layer
  verify   `nydus-inspect verify` (bootstrap and every chunk) vs `nydus-image check` (bootstrap)

Each row: median wall seconds, median CPU seconds (user + system), peak RSS. Target: every ratio
<= 1.0x the real tool. The mount against nydusd is in bench_mount.py.

Run: `make bench`, or `python bench/bench_oracle.py` (BENCH_REPEAT sets repetitions, default 5;
BENCH_BIG=0 skips the 2 GB tar).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, ensure_rootfs, load_note, measure_together, ratio, table  # noqa: E402


def oracle_dir() -> Path:
    """`make oracle`'s directory (built now if it is not yet: the first time takes tens of minutes)."""
    proc = subprocess.run(["bash", str(ROOT / "oracle" / "build.sh")], stdout=subprocess.PIPE, check=True)
    return Path(proc.stdout.decode().strip().splitlines()[-1])


def fails(cmd: list[str]) -> str:
    """Why one run of ``cmd`` fails ('' if it succeeds): the first line that says so."""
    proc = subprocess.run(cmd, capture_output=True, env={**os.environ, "RUST_BACKTRACE": "0"})
    if proc.returncode == 0:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr.decode(errors="replace"))
    said = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return next(
        (ln for ln in said if "panicked" in ln or "rror" in ln),
        said[0] if said else f"exit {proc.returncode}",
    )


def create_cmd(oracle: Path, tar: Path, blob: Path, chunk_size: str = "0x100000") -> list[str]:
    """`nydus-image create` with the options our `pack` writes by default (zstd, blake3, inline blob.meta
    and ToC, RAFS v6), at ``chunk_size``."""
    return [
        str(oracle / "nydus-image"),
        "create",
        "--log-level",
        "warn",
        "--type",
        "tar-rafs",
        "--fs-version",
        "6",
        "--blob-inline-meta",
        "--features",
        "blob-toc",
        "--whiteout-spec",
        "none",
        "--compressor",
        "zstd",
        "--digester",
        "blake3",
        "--chunk-size",
        chunk_size,
        "--blob",
        str(blob),
        str(tar),
    ]


def compare(label: str, tar: Path, oracle: Path, work: Path, repeat: int) -> list[str]:
    image = str(oracle / "nydus-image")
    ours, theirs = work / "ours.blob", work / "theirs.blob"
    rows = measure_together(
        [
            ("nydus-inspect pack", [*NYDUS, "pack", "-q", str(tar), "-o", str(ours)]),
            ("nydus-image create", create_cmd(oracle, tar, theirs)),
        ],
        repeat,
        outputs={"nydus-inspect pack": ours, "nydus-image create": theirs},
    )
    print(f"== pack: {label} ({tar.stat().st_size} bytes)")
    table(rows, baseline="nydus-image create")
    verdicts = [("pack / nydus-image create", ratio(rows, "nydus-inspect pack", "nydus-image create"))]

    # Both unpack and check read the same layer (ours), given the way each tool takes it: ours the
    # blob, nydus-image its bootstrap (taken out beforehand, untimed) and the blob.
    boot = work / "ours.boot"
    subprocess.run(
        [*NYDUS, "entry", str(ours), "image.boot", "-o", str(boot)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    back_ours, back_theirs = work / "ours.tar", work / "theirs.tar"
    their_unpack = [
        image,
        "unpack",
        "--log-level",
        "warn",
        "--bootstrap",
        str(boot),
        "--blob",
        str(ours),
        "--output",
        str(back_theirs),
    ]
    failure = fails(their_unpack)
    print(f"== unpack: {label}")
    if failure:
        # nydus-image unpack aborts on a FIFO ("not implemented" in InodeWrapper::is_fifo): no figure to set ours against.
        print(f"nydus-image unpack fails on this layer: {failure}")
        urows = measure_together(
            [("nydus-inspect unpack", [*NYDUS, "unpack", "-q", str(ours), "-o", str(back_ours)])],
            repeat,
            outputs={"nydus-inspect unpack": back_ours},
        )
        table(urows)
    else:
        urows = measure_together(
            [
                ("nydus-inspect unpack", [*NYDUS, "unpack", "-q", str(ours), "-o", str(back_ours)]),
                ("nydus-image unpack", their_unpack),
            ],
            repeat,
            outputs={"nydus-inspect unpack": back_ours, "nydus-image unpack": back_theirs},
        )
        table(urows, baseline="nydus-image unpack")
        verdicts.append(
            ("unpack / nydus-image unpack", ratio(urows, "nydus-inspect unpack", "nydus-image unpack"))
        )

    vrows = measure_together(
        [
            ("nydus-inspect verify", [*NYDUS, "verify", "-q", str(ours)]),
            ("nydus-image check", [image, "check", "--log-level", "warn", "--bootstrap", str(boot)]),
        ],
        repeat,
    )
    # Not the same work: verify decompresses and checks every chunk and the whole bootstrap; nydus-image
    # check walks the bootstrap only (it has no data check). The ratio says what the data check costs.
    print(f"== verify: {label} (ours reads and checks every chunk; check reads the bootstrap)")
    table(vrows, baseline="nydus-image check")
    verdicts.append(("verify / nydus-image check", ratio(vrows, "nydus-inspect verify", "nydus-image check")))
    print()
    return [f"{label}: {what} = {r:.2f}x (target <= 1.0x)" for what, r in verdicts]


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    oracle = oracle_dir()
    _, tar = ensure_rootfs()
    print(f"real tools: {oracle}; {load_note()}")
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-oracle-"))
    lines = []
    try:
        lines += compare("Debian minbase tar", tar, oracle, work, repeat)
        if os.environ.get("BENCH_BIG", "1") != "0":
            big = BENCH_DIR / "big.tar"
            if not big.exists():
                subprocess.run(["bash", str(ROOT / "bench" / "make_rootfs.sh"), "--big"], check=True)
            lines += compare("2 GB tar", big, oracle, work, max(3, repeat // 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
