"""pack, unpack, verify and mount of the Debian minbase layer by two revisions of nydus-inspect, in turns.

Usage: ``python bench/bench_revs.py BASE [HEAD] [--repeat N] [--ops pack,unpack,verify,mount]``

BASE (and HEAD, when given; else this checkout as it is) is checked out with ``git worktree add --detach``
in a temporary directory, removed at the end. Each operation runs BASE, HEAD, BASE, HEAD ... on the same
input (unpack and verify on the layer HEAD packs), so that the drift of a shared machine's load spreads over
both; the table gives each one's median, and HEAD / BASE. The outputs of pack and unpack are compared too:
a change meant to keep them must give the same bytes.

``mount`` (root and /dev/fuse) mounts the layer with each revision in turns, a fresh mount for each workload:
``ready`` (from the mount command to a listing of rootfs/), then ``find``, ``tar`` (the whole tree to a pipe)
and ``cat`` (every regular file) under rootfs/, each timed on its own (wall seconds; the page cache is not
dropped, which would disturb whoever else shares the machine, so both revisions read warm stored bytes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, ROOT, ensure_rootfs, load_note, measure_together, run_once, sha256_of, table  # noqa: E402


def _checkout(rev: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), rev], check=True
    )
    import compileall

    for pkg in ("nydus_inspect", "tui"):
        if (where / pkg).is_dir():
            compileall.compile_dir(str(where / pkg), quiet=1)
    return where


def _cli(tree: Path) -> list[str]:
    # run_once puts this checkout on PYTHONPATH; env puts the revision's first for the command itself.
    return ["env", f"PYTHONPATH={tree}", PY, "-m", "nydus_inspect"]


MOUNT_WORKLOADS = {
    "find": "find rootfs | wc -l",
    "tar": "tar -cf - rootfs | wc -c",
    "cat": "find rootfs -type f -exec cat {} + | wc -c",
}


def _mount(cli: list[str], blob: Path, mp: Path, log: Path) -> float:
    """Mount ``blob`` on ``mp``; seconds until rootfs/ lists."""
    mp.mkdir(parents=True, exist_ok=True)
    parent_dev = os.stat(mp.parent).st_dev
    t0 = time.perf_counter()
    subprocess.run([*cli, "mount", "--log-file", str(log), str(blob), str(mp)], check=True)
    while True:
        try:
            if os.stat(mp).st_dev != parent_dev and os.listdir(mp / "rootfs"):
                return time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"the mount on {mp} never answered")
        time.sleep(0.001)


def _daemon_cpu(mp: Path) -> float:
    """CPU seconds (user + system) the process serving ``mp`` (the one whose command line names it) used so
    far; 0.0 when it is not found. Wall times on a shared machine drift with its load; these do less."""
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if str(mp).encode() not in Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0"):
                continue
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _mount_rounds(trees: dict[str, Path], names: dict[str, str], blob: Path, work: Path, repeat: int) -> None:
    """The mount figures of both revisions, in turns (base, head, base, head ...), a fresh mount per workload."""
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # the daemon's, over its mount and the workload
    outputs: dict[tuple[str, str], set[str]] = {}
    for _ in range(repeat):
        for side in ("base", "head"):
            cli = _cli(trees[side])
            for work_name, shell in MOUNT_WORKLOADS.items():
                mp = work / f"mnt-{side}"
                ready = _mount(cli, blob, mp, work / f"mount-{side}.log")
                try:
                    times.setdefault((side, "ready"), []).append(ready)
                    t0 = time.perf_counter()
                    out = subprocess.run(
                        ["sh", "-c", shell], cwd=mp, check=True, stdout=subprocess.PIPE
                    ).stdout.decode()
                    times.setdefault((side, work_name), []).append(time.perf_counter() - t0)
                    cpu.setdefault((side, work_name), []).append(_daemon_cpu(mp))
                    outputs.setdefault((side, work_name), set()).add(out.strip())
                finally:
                    subprocess.run([*cli, "umount", str(mp)], check=False, stdout=subprocess.DEVNULL)
    print()
    print(f"mount: {repeat} rounds, fresh mount per workload; wall seconds, median; {load_note()}")
    for what in ("ready", *MOUNT_WORKLOADS):
        base_m = statistics.median(times[("base", what)])
        head_m = statistics.median(times[("head", what)])
        same = ""
        if what != "ready":
            same = "same output" if outputs[("base", what)] == outputs[("head", what)] else "OUTPUT DIFFERS"
        print(
            f"mount {what:6s}: {names['head']} / {names['base']} = {head_m:.3f} / {base_m:.3f} = "
            f"{head_m / base_m:.3f}x (wall) {same}"
        )
        if what != "ready":
            base_c = statistics.median(cpu[("base", what)])
            head_c = statistics.median(cpu[("head", what)])
            print(
                f"mount {what:6s}: daemon CPU head / base = {head_c:.3f} / {base_c:.3f} = "
                f"{head_c / base_c if base_c else float('nan'):.3f}x (mount and workload)"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the revision to compare against (a commit, a branch, a tag)")
    ap.add_argument("head", nargs="?", help="the revision to measure (default: this checkout as it is)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command (default 5)")
    ap.add_argument(
        "--ops",
        default="pack,unpack,verify,mount",
        help="which operations (default all four; mount needs FUSE)",
    )
    args = ap.parse_args()
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    _, tar = ensure_rootfs()
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-revs-"))
    trees: dict[str, Path] = {}
    try:
        trees["base"] = _checkout(args.base, work / "base")
        trees["head"] = _checkout(args.head, work / "head") if args.head else ROOT
        names = {
            "base": f"base {args.base}",
            "head": f"head {args.head}" if args.head else "head (this checkout)",
        }
        blob = work / "input.blob"
        run_once([*_cli(trees["head"]), "pack", "-q", str(tar), "-o", str(blob)])
        print(f"{tar} ({tar.stat().st_size} bytes) -> {blob.stat().st_size} bytes of layer; {load_note()}")
        for op in ops:
            if op == "mount":
                _mount_rounds(trees, names, blob, work, args.repeat)
                continue
            commands, outputs = [], {}
            for side in ("base", "head"):
                out = work / f"{op}-{side}.out"
                cli = _cli(trees[side])
                if op == "pack":
                    cmd = [*cli, "pack", "-q", str(tar), "-o", str(out)]
                elif op == "unpack":
                    cmd = [*cli, "unpack", "-q", str(blob), "-o", str(out)]
                elif op == "verify":
                    cmd = [*cli, "verify", "-q", str(blob)]
                else:
                    raise SystemExit(f"unknown operation {op!r}: pack, unpack, verify or mount")
                name = f"{op}: {names[side]}"
                commands.append((name, cmd))
                if op != "verify":
                    outputs[name] = out
            rows = measure_together(commands, args.repeat, outputs)
            print()
            table(rows, baseline=commands[0][0])
            base_m, head_m = rows[0]["median"], rows[1]["median"]
            print(f"{op}: head / base = {head_m:.3f} / {base_m:.3f} = {head_m / base_m:.3f}x (wall, median)")
            base_c, head_c = rows[0]["cpu"], rows[1]["cpu"]
            print(f"{op}: head / base = {head_c:.3f} / {base_c:.3f} = {head_c / base_c:.3f}x (CPU, median)")
            if outputs:
                a, b = (sha256_of(work / f"{op}-{side}.out") for side in ("base", "head"))
                print(f"{op}: outputs {'identical' if a == b else 'DIFFER'} (sha256 {a[:16]} / {b[:16]})")
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
                )
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
