"""Plain EROFS images of the Debian rootfs: our reader beside erofs-utils 1.9.3's own.

For each image (uncompressed, lz4hc with 64 KiB pclusters, lzma with fragments), built once by the
`make oracle` mkfs.erofs from the bench rootfs tar:

- `unpack --to-dir` against `fsck.erofs --extract=DIR` (both write the whole tree), except for the image
  with fragments, which that fsck cannot extract (it writes the packed inode where the root goes);
- `verify` against `fsck.erofs --extract` without a directory (both decode every file).

Ratios are ours / fsck.erofs. Without erofs-utils 1.9.3 (`make oracle`) it says so and stops.

Then the mounts of the same images: our FUSE mount (`nydus-inspect mount`), `erofsfuse` of the same erofs-utils
build and the kernel's own EROFS (`mount -t erofs -o loop`, where the machine allows it), each mounted afresh
with the page cache dropped before every run: a cold `tar -cf - .` of the whole tree and a `cat` of every file.
Target: ours <= 1.0x erofsfuse. `python bench/bench_erofs.py [REPEAT] --mount-only` runs only these.
Run: `make bench` or `python bench/bench_erofs.py [REPEAT]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import (  # noqa: E402
    BENCH_DIR,
    NYDUS,
    drop_caches,
    ensure_rootfs,
    load_note,
    measure_together,
    ratio,
    run_once,
    table,
)

from oracle import find_erofs_utils  # noqa: E402

IMAGES = {
    "plain": (),
    "lz4hc": ("-zlz4hc", "-C65536"),
    "lzma-fragments": ("-zlzma", "-Efragments"),
}


#: What each mount is asked to do, cold: MNT is where the tree is.
READS = {
    "tar": "tar -cf - -C {mnt} . | wc -c",
    "cat every file": "find {mnt} -type f -print0 | xargs -0 -n 256 cat | wc -c",
}


def _wait_mounted(mnt: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mnt):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_erofs: {mnt} did not mount")
        time.sleep(0.05)


def _mounters(tools: Path, image: Path, work: Path):
    """(name, mount(), the tree's directory, unmount()) for each mount that works here."""
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)

    def ours():
        subprocess.run([*NYDUS, "mount", str(image), str(mnt)], check=True, stdout=subprocess.DEVNULL)

    def fuse():
        subprocess.run([str(tools / "erofsfuse"), str(image), str(mnt)], check=True, capture_output=True)
        _wait_mounted(mnt)

    def kernel():
        subprocess.run(
            ["mount", "-t", "erofs", "-o", "loop,ro", str(image), str(mnt)], check=True, capture_output=True
        )

    def umount_ours():
        subprocess.run([*NYDUS, "umount", str(mnt)], check=True)

    def umount():
        subprocess.run(["umount", str(mnt)], check=True)

    out = [("ours (FUSE)", ours, mnt / "rootfs", umount_ours), ("erofsfuse", fuse, mnt, umount)]
    try:
        kernel()
        umount()
        out.append(("kernel erofs (loop)", kernel, mnt, umount))
    except subprocess.CalledProcessError as exc:
        print(f"kernel EROFS mount unavailable here: {exc.stderr.decode(errors='replace').strip()}")
    return out


def mount_bench(tools: Path, image: Path, work: Path, repeat: int) -> None:
    mounters = _mounters(tools, image, work)
    walls: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for read, cmd in READS.items():
            for name, mount, tree, unmount in mounters:  # in turns, so drift in load spreads over all
                mount()
                try:
                    drop_caches(required=False)  # not root: warm-page-cache figures for the image
                    w, _, c = run_once(cmd.format(mnt=tree), shell=True)
                finally:
                    unmount()
                walls.setdefault((read, name), []).append(w)
                cpus.setdefault((read, name), []).append(c)
    print(f"{'mount, cold':<34} {'median s':>9} {'min s':>8} {'reader CPU s':>13} {'/ erofsfuse':>12}")
    for read in READS:
        base = statistics.median(walls[(read, "erofsfuse")])
        for name, *_ in mounters:
            ws = walls[(read, name)]
            med = statistics.median(ws)
            print(
                f"{read + ': ' + name:<34} {med:>9.3f} {min(ws):>8.3f} "
                f"{statistics.median(cpus[(read, name)]):>13.2f} {med / base:>11.2f}x"
            )


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    mount_only = "--mount-only" in sys.argv
    repeat = int(args[0]) if args else 3
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
        if mount_only or os.geteuid() == 0:
            mount_bench(tools, image, work, repeat)
        if mount_only:
            continue
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
