"""Plain EROFS images of the Debian rootfs: our reader beside erofs-utils 1.9.3's own.

For each image (uncompressed, lz4hc with 64 KiB pclusters, lzma with fragments), built once by the
`make oracle` mkfs.erofs from the bench rootfs tar:

- `unpack --to-dir` against `fsck.erofs --extract=DIR` (both write the whole tree), except for the image
  with fragments, which that fsck cannot extract (it writes the packed inode where the root goes);
- `verify` against `fsck.erofs --extract` without a directory (both decode every file).

Ratios are ours / fsck.erofs. Without erofs-utils 1.9.3 (`make oracle`) it says so and stops.
Run: `make bench` or `python bench/bench_erofs.py [REPEAT]`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import BENCH_DIR, NYDUS, ensure_rootfs, load_note, measure_together, ratio, table  # noqa: E402

from oracle import find_erofs_utils  # noqa: E402

IMAGES = {
    "plain": (),
    "lz4hc": ("-zlz4hc", "-C65536"),
    "lzma-fragments": ("-zlzma", "-Efragments"),
}


def main() -> int:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tools = find_erofs_utils()
    if tools is None:
        print("bench_erofs: erofs-utils 1.9.3 is not built (run `make oracle`): skipped")
        return 0
    _, tar = ensure_rootfs()
    work = BENCH_DIR / "erofs"
    work.mkdir(parents=True, exist_ok=True)
    print(f"plain EROFS images of {tar} ({load_note()})")
    for name, opts in IMAGES.items():
        image = work / f"rootfs-{name}.erofs"
        if not image.exists() or image.stat().st_mtime < tar.stat().st_mtime:
            tmp = image.with_suffix(".tmp")
            subprocess.run(
                [str(tools / "mkfs.erofs"), "--quiet", *opts, str(tmp), "--tar=f", str(tar)], check=True
            )
            tmp.rename(image)
        ours_dir, fsck_dir = work / "out-ours", work / "out-fsck"
        print(f"\n== {name}: {image.stat().st_size / 2**20:.1f} MiB")
        fsck = str(tools / "fsck.erofs")
        commands = [
            ("ours verify", [*NYDUS, "verify", "-q", str(image)]),
            ("fsck.erofs --extract", [fsck, "--extract", str(image)]),
        ]
        if "fragments" not in name:
            commands += [
                ("ours unpack --to-dir", [*NYDUS, "unpack", "-q", str(image), "--to-dir", str(ours_dir)]),
                ("fsck.erofs --extract=DIR", [fsck, f"--extract={fsck_dir}", "--force", str(image)]),
            ]
        rows = measure_together(
            commands,
            repeat=repeat,
            outputs={"ours unpack --to-dir": ours_dir, "fsck.erofs --extract=DIR": fsck_dir},
        )
        table(rows)
        line = f"verify / fsck --extract: {ratio(rows, 'ours verify', 'fsck.erofs --extract'):.2f}x"
        if "fragments" not in name:
            line += (
                f", unpack --to-dir / fsck --extract=DIR: "
                f"{ratio(rows, 'ours unpack --to-dir', 'fsck.erofs --extract=DIR'):.2f}x"
            )
        print(line)
        subprocess.run(["rm", "-rf", str(ours_dir), str(fsck_dir)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
