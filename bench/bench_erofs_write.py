"""Writing EROFS layers: our `pack --format erofs` beside erofs-utils 1.9.3's mkfs.erofs, and our dm-verity
payload beside `veritysetup format`, on the Debian rootfs tar.

- `pack --format erofs` against `mkfs.erofs --tar=f --aufs -Enoinline_data` (containerd's options);
- `pack --format erofs --dm-verity` against mkfs.erofs followed by `veritysetup format` of its image
  (the hash tree into a file of its own);
- `pack --format erofs --seekable` (4M zstd frames and the chunk table) against our plain image and against
  mkfs.erofs followed by `zstd -3 -T1` of its image (one frame: the nearest peer, with no random access);
  with `--dm-verity` against mkfs.erofs, zstd and `veritysetup format --hash sha512` of the image;
- `pack --format erofs --erofs-compression lz4hc,12` against `mkfs.erofs -zlz4hc,12` with containerd's
  options (the SPEC containerd passes through), with both images' sizes.

Ratios are ours / theirs (for the compressed pair: wall, CPU, peak RSS). Without erofs-utils 1.9.3 (`make
oracle`) or veritysetup it says so and skips. Run: `make bench` or `python bench/bench_erofs_write.py
[REPEAT] [--compressed-only]`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import BENCH_DIR, NYDUS, ensure_rootfs, load_note, measure_together, ratio, table  # noqa: E402

from oracle import find_erofs_utils  # noqa: E402


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--compressed-only"]
    compressed_only = len(args) < len(sys.argv) - 1
    repeat = int(args[0]) if args else 3
    tools = find_erofs_utils()
    if tools is None:
        print("bench_erofs_write: erofs-utils 1.9.3 is not built (run `make oracle`): skipped")
        return 0
    _, tar = ensure_rootfs()
    work = BENCH_DIR / "erofs-write"
    work.mkdir(parents=True, exist_ok=True)
    ours, theirs = work / "ours.erofs", work / "mkfs.erofs"
    ours_v, theirs_v, hash_file = work / "ours-verity.erofs", work / "mkfs-verity.erofs", work / "mkfs.hash"
    ours_s, ours_sv = work / "ours.seekable", work / "ours-verity.seekable"
    theirs_z_img, theirs_z = work / "mkfs-z.erofs", work / "mkfs.erofs.zst"
    theirs_zv_img, theirs_zv, hash_zv = (
        work / "mkfs-zv.erofs",
        work / "mkfs-v.erofs.zst",
        work / "mkfs-zv.hash",
    )
    ours_c, theirs_c = work / "ours-lz4hc.erofs", work / "mkfs-lz4hc.erofs"
    mkfs = f"{tools / 'mkfs.erofs'} --quiet --tar=f --aufs -Enoinline_data -b4096"
    print(f"EROFS layers written from {tar} ({load_note()})")
    c_rows = [
        (
            "ours --erofs-compression lz4hc,12",
            [
                *NYDUS,
                "pack",
                "-q",
                "--format",
                "erofs",
                "--erofs-compression",
                "lz4hc,12",
                str(tar),
                "-o",
                str(ours_c),
            ],
        ),
        ("mkfs.erofs -zlz4hc,12", ["sh", "-c", f"{mkfs} -zlz4hc,12 {theirs_c} {tar}"]),
    ]
    if compressed_only:
        rows = measure_together(c_rows, repeat=repeat, outputs={c_rows[0][0]: ours_c, c_rows[1][0]: theirs_c})
        table(rows)
        _compressed_lines(rows, c_rows, ours_c, theirs_c)
        return 0
    commands = [
        ("ours pack --format erofs", [*NYDUS, "pack", "-q", "--format", "erofs", str(tar), "-o", str(ours)]),
        ("mkfs.erofs (containerd options)", ["sh", "-c", f"{mkfs} {theirs} {tar}"]),
    ]
    outputs = {commands[0][0]: ours, commands[1][0]: theirs}
    veritysetup = shutil.which("veritysetup")
    if veritysetup:
        commands += [
            (
                "ours pack --format erofs --dm-verity",
                [*NYDUS, "pack", "-q", "--format", "erofs", "--dm-verity", str(tar), "-o", str(ours_v)],
            ),
            (
                "mkfs.erofs + veritysetup format",
                [
                    "sh",
                    "-c",
                    f"{mkfs} {theirs_v} {tar} && rm -f {hash_file} && {veritysetup} format --salt="
                    f"{'0' * 64} {theirs_v} {hash_file} >/dev/null",
                ],
            ),
        ]
        outputs[commands[2][0]] = ours_v
        outputs[commands[3][0]] = theirs_v
    else:
        print("veritysetup not installed (Debian cryptsetup-bin): the dm-verity rows are skipped")
    zstd = shutil.which("zstd")
    seekable = "ours pack --format erofs --seekable"
    seekable_v = "ours ... --seekable --dm-verity"
    if zstd:
        pack_s = [*NYDUS, "pack", "-q", "--format", "erofs", "--seekable", str(tar)]
        commands += [
            (seekable, [*pack_s, "-o", str(ours_s)]),
            (
                "mkfs.erofs + zstd -3",
                [
                    "sh",
                    "-c",
                    f"{mkfs} {theirs_z_img} {tar} && {zstd} -q -3 -T1 -f {theirs_z_img} -o {theirs_z}",
                ],
            ),
        ]
        outputs[seekable] = ours_s
        outputs["mkfs.erofs + zstd -3"] = theirs_z
        if veritysetup:
            commands += [
                (seekable_v, [*pack_s, "--dm-verity", "-o", str(ours_sv)]),
                (
                    "mkfs.erofs + zstd + veritysetup",
                    [
                        "sh",
                        "-c",
                        f"{mkfs} {theirs_zv_img} {tar} && {zstd} -q -3 -T1 -f {theirs_zv_img} -o {theirs_zv} && "
                        f"rm -f {hash_zv} && {veritysetup} format --hash=sha512 --salt=- {theirs_zv_img} "
                        f"{hash_zv} >/dev/null",
                    ],
                ),
            ]
            outputs[seekable_v] = ours_sv
            outputs["mkfs.erofs + zstd + veritysetup"] = theirs_zv
    else:
        print("zstd not installed: the seekable rows are skipped")
    commands += c_rows
    outputs[c_rows[0][0]] = ours_c
    outputs[c_rows[1][0]] = theirs_c
    rows = measure_together(commands, repeat=repeat, outputs=outputs)
    table(rows)
    line = f"pack --format erofs / mkfs.erofs: {ratio(rows, commands[0][0], commands[1][0]):.2f}x"
    if veritysetup:
        line += (
            f", with dm-verity / mkfs.erofs + veritysetup: {ratio(rows, commands[2][0], commands[3][0]):.2f}x"
        )
    print(line)
    if zstd:
        line = (
            f"--seekable / plain: {ratio(rows, seekable, commands[0][0]):.2f}x, "
            f"/ mkfs.erofs + zstd: {ratio(rows, seekable, 'mkfs.erofs + zstd -3'):.2f}x"
        )
        if veritysetup:
            line += (
                f", with dm-verity / mkfs.erofs + zstd + veritysetup: "
                f"{ratio(rows, seekable_v, 'mkfs.erofs + zstd + veritysetup'):.2f}x"
            )
        print(line)
        sizes = [("image", ours), ("ours --seekable", ours_s), ("zstd -3 of mkfs.erofs's image", theirs_z)]
        print("bytes: " + ", ".join(f"{what} {p.stat().st_size}" for what, p in sizes if p.exists()))
    for p in (ours, theirs, ours_v, theirs_v, hash_file, ours_s, ours_sv, theirs_z_img, theirs_z):
        p.unlink(missing_ok=True)
    for p in (theirs_zv_img, theirs_zv, hash_zv):
        p.unlink(missing_ok=True)
    _compressed_lines(rows, c_rows, ours_c, theirs_c)
    return 0


def _compressed_lines(rows: list[dict], c_rows: list, ours: Path, theirs: Path) -> None:
    """Ours / mkfs.erofs for the compressed images: wall, CPU and peak RSS, then both sizes."""
    a, b = (next(r for r in rows if r["name"] == name) for name, _ in c_rows)
    print(
        f"--erofs-compression lz4hc,12 / mkfs.erofs -zlz4hc,12: wall {a['median'] / b['median']:.2f}x, "
        f"CPU {a['cpu'] / b['cpu']:.2f}x, peak RSS {a['rss_kib'] / b['rss_kib']:.2f}x"
    )
    so, st = ours.stat().st_size, theirs.stat().st_size
    print(f"compressed image bytes: ours {so}, mkfs.erofs {st} ({so / st:.3f}x)")
    ours.unlink(missing_ok=True)
    theirs.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
