"""verify on the real Debian minbase layer, against the peers doing the same work (issue 6).

The peers: `zstd -d` of the same data (decompression), `b3sum` of the uncompressed bytes (the chunk
digests) and `sha256sum` of the blob (the ToC entry digests). Target: verify <= 1.5x their sum.
Run: `make bench` or `python bench/bench_verify.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NYDUS, ROOT, ensure_rootfs, load_note, measure, table  # noqa: E402


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    _, tar = ensure_rootfs()
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-verify-"))
    try:
        blob, zst = work / "rootfs.blob", work / "rootfs.tar.zst"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [*NYDUS, "pack", "-q", str(tar), "-o", str(blob)], check=True, env=env, stdout=subprocess.DEVNULL
        )
        subprocess.run(["zstd", "-3", "-T2", "-q", "-f", str(tar), "-o", str(zst)], check=True)
        b3 = shutil.which("b3sum")
        rows = [
            measure("nydus-inspect verify", [*NYDUS, "verify", "-q", str(blob)], repeat),
            measure("zstd -d (to /dev/null)", f"zstd -d -q -c {zst} > /dev/null", repeat, shell=True),
            measure("sha256sum blob", ["sha256sum", str(blob)], repeat),
        ]
        if b3:
            rows.append(measure("b3sum tar", [b3, str(tar)], repeat))
        print(
            f"verify: {blob} ({blob.stat().st_size} bytes, from {tar.stat().st_size} bytes of tar); {load_note()}"
        )
        table(rows)
        peers = sum(r["median"] for r in rows[1:])
        ratio = rows[0]["median"] / peers
        print(
            f"verify / (zstd -d + sha256sum{' + b3sum' if b3 else ''}) = {rows[0]['median']:.3f} / {peers:.3f} "
            f"= {ratio:.2f}x (target <= 1.5x)"
        )
        if not b3:
            print("b3sum is not installed (Debian package b3sum): the peer sum leaves it out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
