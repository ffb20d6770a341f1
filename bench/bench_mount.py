"""FUSE mount of the Debian minbase rootfs layer, side by side with the real nydusd, squashfuse_ll and ratarmount.

One run measures, for each of nydus-inspect mount, nydusd (`make oracle`; on the same layer blob), squashfuse_ll (on `mksquashfs -comp zstd
-Xcompression-level 3 -b 1M` of the same tree) and ratarmount (on the same tar, its index built beforehand):

  mount ready   from starting the mount command until the mount point answers (warm page cache)
  tar           cold `tar -cf - .` of the whole tree, piped into wc
  find          cold `find . | wc -l`
  ls -lR        cold `ls -lR`
  50 MB read    cold `cat` of one 50 MiB file (deterministic, mixed compressible data) added to the tree

"Cold": every run mounts afresh, then drops the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`).
Tools alternate within each repetition, so machine noise hits them alike; figures are medians.
Targets: tar and ls -lR <= 1.0x squashfuse_ll, every figure faster than ratarmount, mount ready < 0.5 s,
and the mount daemon's peak RSS while reading the whole tree < 150 MB + its chunk cache.

Run: `make bench` or `python bench/bench_mount.py` (root). BENCH_REPEAT sets repetitions (default 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, drop_caches, ensure_rootfs, load_note  # noqa: E402

BIG_NAME = "nydus-bench-50M.bin"
BIG_SIZE = 50 << 20
CACHE = "256M"
CACHE_BYTES = 256 << 20
WORK = BENCH_DIR / "mount"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------------------- inputs
def big_file_chunks():
    """50 MiB: 1 MiB pieces of seeded random bytes, repeated text, or half and half."""
    rng = random.Random(50)
    text = b"nydus-inspect mount benchmark: the quick brown fox jumps over the lazy dog 0123456789\n" * 13000
    for i in range(BIG_SIZE >> 20):
        kind = rng.randrange(3)
        if kind == 0:
            yield rng.randbytes(1 << 20)
        elif kind == 1:
            yield text[i : i + (1 << 20)]
        else:
            yield rng.randbytes(1 << 19) + text[: 1 << 19]


class _Chunks:
    def __init__(self) -> None:
        self.it = big_file_chunks()
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and (piece := next(self.it, None)) is not None:
            self.buf += piece
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def prepare(rootfs: Path, tar: Path) -> dict[str, Path]:
    """The tar + 50 MiB file, its tree, the nydus layer and the squashfs image (each built once)."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = {
        "tar": WORK / "rootfs50.tar",
        "tree": WORK / "rootfs50",
        "blob": WORK / "rootfs50.blob",
        "sqfs": WORK / "rootfs50.sqfs",
    }
    if not out["tar"].exists():
        tmp = out["tar"].with_suffix(".tmp")
        shutil.copyfile(tar, tmp)
        with tarfile.open(tmp, "a", format=tarfile.PAX_FORMAT) as tf:  # appends after the last member
            info = tarfile.TarInfo("./" + BIG_NAME)
            info.size, info.mode, info.mtime = BIG_SIZE, 0o644, 1_700_000_000
            tf.addfile(info, _Chunks())
        tmp.rename(out["tar"])
    if not out["tree"].exists():
        tmp = Path(str(out["tree"]) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        subprocess.run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-xpf",
                str(out["tar"]),
                "-C",
                str(tmp),
            ],
            check=True,
        )
        tmp.rename(out["tree"])
    if not out["blob"].exists():
        subprocess.run(
            [*NYDUS, "pack", "-q", str(out["tar"]), "-o", str(out["blob"])],
            check=True,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
    if not out["sqfs"].exists():
        subprocess.run(
            [
                "mksquashfs",
                str(out["tree"]),
                str(out["sqfs"]) + ".tmp",
                "-comp",
                "zstd",
                "-Xcompression-level",
                "3",
                "-b",
                "1M",
                "-noappend",
                "-quiet",
                "-no-progress",
            ],
            check=True,
        )
        os.rename(str(out["sqfs"]) + ".tmp", out["sqfs"])
    return out


# ---------------------------------------------------------------------------- the tools
class Tool:
    name = ""
    sub = ""  # where the tree is, below the mount point

    def __init__(self, inputs: dict[str, Path]) -> None:
        self.inputs = inputs

    def mount_cmd(self, mp: Path) -> list[str]:
        raise NotImplementedError

    def mount(self, mp: Path) -> float:
        """Mount; seconds until the mount point answers with the tree."""
        t0 = time.perf_counter()
        subprocess.run(
            self.mount_cmd(mp), check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        root = mp / self.sub
        parent_dev = os.stat(mp.parent).st_dev
        while True:
            try:
                if os.stat(mp).st_dev != parent_dev and os.listdir(root):
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 120:
                raise SystemExit(f"{self.name}: the mount never answered")
            time.sleep(0.001)
        return time.perf_counter() - t0

    def umount(self, mp: Path) -> None:
        subprocess.run(["fusermount3", "-u", str(mp)], check=False, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while is_mounted(mp) and time.time() < deadline:
            time.sleep(0.02)
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)

    def daemon_pid(self, mp: Path) -> int | None:
        """The serving process: the one whose command line names this (unique) mount point."""
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if str(mp).encode() in cmd and int(d) != os.getpid():
                    return int(d)
        return None


class Nydus(Tool):
    name = "nydus-inspect mount"
    sub = "rootfs"

    def mount_cmd(self, mp: Path) -> list[str]:
        return [
            *NYDUS,
            "mount",
            "--cache-size",
            CACHE,
            "--log-file",
            str(WORK / "mount.log"),
            str(self.inputs["blob"]),
            str(mp),
        ]

    def umount(self, mp: Path) -> None:
        subprocess.run([*NYDUS, "umount", str(mp)], check=True, env=ENV)


class Nydusd(Tool):
    """The real nydusd (`make oracle`) on the same layer blob: its bootstrap taken out beforehand and named
    by the blob's sha256 (an inline layer's blob id is the bootstrap's file stem), the blob beside it under
    that name, localfs backend and blob cache as the snapshotter configures them."""

    name = "nydusd"

    def __init__(self, inputs: dict[str, Path], oracle: Path) -> None:
        super().__init__(inputs)
        self.nydusd = oracle / "nydusd"
        self.dir = WORK / "nydusd"
        blobs = self.dir / "blobs"
        digest = hashlib.sha256()
        with open(inputs["blob"], "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        self.boot = self.dir / digest.hexdigest()
        if not self.boot.exists():
            blobs.mkdir(parents=True, exist_ok=True)
            (blobs / digest.hexdigest()).unlink(missing_ok=True)
            os.link(inputs["blob"], blobs / digest.hexdigest())
            subprocess.run(
                [*NYDUS, "entry", str(inputs["blob"]), "image.boot", "-o", str(self.boot)],
                check=True,
                env=ENV,
            )
        self.config = self.dir / "nydusd.json"
        self.procs: dict[Path, subprocess.Popen] = {}

    def mount(self, mp: Path) -> float:
        cache = self.dir / f"cache-{mp.name}"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        config = {
            "device": {
                "backend": {"type": "localfs", "config": {"dir": str(self.dir / "blobs")}},
                "cache": {"type": "blobcache", "config": {"work_dir": str(cache)}},
            },
            "mode": "direct",
            "digest_validate": False,
            "enable_xattr": True,
        }
        self.config.write_text(json.dumps(config))
        t0 = time.perf_counter()
        self.procs[mp] = subprocess.Popen(
            [
                str(self.nydusd),
                "--config",
                str(self.config),
                "--bootstrap",
                str(self.boot),
                "--mountpoint",
                str(mp),
                "--log-level",
                "error",
                "--rlimit-nofile",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        parent_dev = os.stat(mp.parent).st_dev
        while True:
            try:
                if os.stat(mp).st_dev != parent_dev and os.listdir(mp):
                    break
            except OSError:
                pass
            if self.procs[mp].poll() is not None or time.perf_counter() - t0 > 120:
                raise SystemExit("nydusd: the mount never answered")
            time.sleep(0.001)
        return time.perf_counter() - t0

    def umount(self, mp: Path) -> None:
        super().umount(mp)
        proc = self.procs.pop(mp, None)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir / f"cache-{mp.name}", ignore_errors=True)

    def daemon_pid(self, mp: Path) -> int | None:
        proc = self.procs.get(mp)
        return proc.pid if proc else None


def oracle_dir() -> Path | None:
    """`make oracle`'s directory, or None when the real tools cannot be built here."""
    proc = subprocess.run(["bash", str(ROOT / "oracle" / "build.sh")], stdout=subprocess.PIPE)
    lines = proc.stdout.decode().strip().splitlines()
    return Path(lines[-1]) if proc.returncode == 0 and lines else None


class Squashfuse(Tool):
    name = "squashfuse_ll"

    def mount_cmd(self, mp: Path) -> list[str]:
        return ["squashfuse_ll", str(self.inputs["sqfs"]), str(mp)]


class Ratarmount(Tool):
    name = "ratarmount"

    def mount_cmd(self, mp: Path) -> list[str]:
        return ["ratarmount", str(self.inputs["tar"]), str(mp)]


def is_mounted(mp: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mp) for line in f)


def rss_kib(pid: int | None) -> tuple[int, int]:
    """(current, peak) RSS of a process in KiB."""
    if pid is None:
        return 0, 0
    cur = peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return cur, peak


WORKLOADS = {
    "tar -cf - . | wc -c": "tar -cf - . | wc -c",
    "find . | wc -l": "find . | wc -l",
    "ls -lR": "ls -lR > /dev/null",
    f"cat {BIG_NAME} (50 MB)": f"cat {BIG_NAME} > /dev/null",
}


def run_workload(tool: Tool, mp: Path, shell: str) -> tuple[float, int]:
    """Fresh mount, cold caches, one run: (seconds, daemon peak RSS KiB)."""
    tool.mount(mp)
    pid = tool.daemon_pid(mp)
    try:
        drop_caches()
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", shell], cwd=mp / tool.sub, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        return wall, rss_kib(pid)[1]
    finally:
        tool.umount(mp)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_mount needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    rootfs, tar = ensure_rootfs()
    inputs = prepare(rootfs, tar)
    tools: list[Tool] = [Nydus(inputs), Squashfuse(inputs)]
    missing = []
    oracle = oracle_dir()
    if oracle is None:
        missing.append("nydusd not built (make oracle)")
    else:
        tools.insert(1, Nydusd(inputs, oracle))
    for exe, why in (
        ("squashfuse_ll", "apt-get install squashfuse"),
        ("ratarmount", "pip install ratarmount"),
    ):
        if not shutil.which(exe):
            missing.append(f"{exe} not found ({why})")
    if shutil.which("ratarmount"):
        tools.append(Ratarmount(inputs))
    if not shutil.which("squashfuse_ll"):
        tools = [t for t in tools if t.name != "squashfuse_ll"]
    work = Path(tempfile.mkdtemp(prefix="nydus-bench-mount-"))
    results: dict[tuple[str, str], list[float]] = {}
    peak_rss: dict[str, int] = {}
    try:
        # ratarmount builds its index on the first mount: do that once, outside the figures.
        for tool in tools:
            mp = work / f"warm-{tool.name.split()[0]}"
            mp.mkdir()
            tool.mount(mp)
            tool.umount(mp)
        for rep in range(repeat):
            for tool in tools if rep % 2 == 0 else list(reversed(tools)):
                mp = work / f"{tool.name.split()[0]}-{rep}"
                mp.mkdir()
                t = tool.mount(mp)
                tool.umount(mp)
                results.setdefault(("mount ready", tool.name), []).append(t)
                for wname, shell in WORKLOADS.items():
                    wall, peak = run_workload(tool, mp, shell)
                    results.setdefault((wname, tool.name), []).append(wall)
                    if wname.startswith("tar"):
                        peak_rss[tool.name] = max(peak_rss.get(tool.name, 0), peak)
    finally:
        for mp in work.iterdir():
            if is_mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"tree: {inputs['tar']} ({inputs['tar'].stat().st_size} bytes, minbase + {BIG_NAME}); "
        f"nydus blob {inputs['blob'].stat().st_size} bytes, squashfs {inputs['sqfs'].stat().st_size} bytes; "
        f"{repeat} runs each, medians; {load_note()}"
    )
    for missing_note in missing:
        print(f"note: {missing_note}")
    names = [t.name for t in tools]
    header = (
        f"{'figure':<28}"
        + "".join(f"{n:>22}" for n in names)
        + f"{'vs nydusd':>11}{'vs squashfuse_ll':>18}{'vs ratarmount':>15}"
    )
    print(header)
    verdicts = []
    for wname in ["mount ready", *WORKLOADS]:
        med = {n: statistics.median(results[(wname, n)]) for n in names if (wname, n) in results}
        row = f"{wname:<28}" + "".join(f"{med.get(n, float('nan')):>21.3f}s" for n in names)
        ours = med[Nydus.name]
        nd = med.get(Nydusd.name)
        sq = med.get(Squashfuse.name)
        ra = med.get(Ratarmount.name)
        row += f"{(ours / nd if nd else float('nan')):>10.2f}x"
        row += f"{(ours / sq if sq else float('nan')):>17.2f}x{(ours / ra if ra else float('nan')):>14.2f}x"
        print(row)
        if nd:
            verdicts.append((f"{wname}: <= 1.0x nydusd ({ours / nd:.2f}x)", ours <= nd))
        if ra:
            verdicts.append((f"{wname}: faster than ratarmount", ours < ra))
        if sq and wname in ("tar -cf - . | wc -c", "ls -lR"):
            verdicts.append((f"{wname}: <= 1.0x squashfuse_ll", ours <= sq))
        if wname == "mount ready":
            verdicts.append(("mount ready < 0.5 s", ours < 0.5))
    print()
    print(
        "mount daemon peak RSS over a cold tar of the whole tree (VmHWM): "
        + ", ".join(f"{n} {peak_rss.get(n, 0) / 1024:.1f} MiB" for n in names)
    )
    limit = 150e6 + CACHE_BYTES
    peak = peak_rss.get(Nydus.name, 0) * 1024
    verdicts.append(
        (f"nydus-inspect peak RSS {peak / 1e6:.0f} MB < 150 MB + {CACHE} chunk cache", peak < limit)
    )
    full = full_cache_rss()
    if full is not None:
        size, peak = full
        verdicts.append(
            (
                f"with a full cache: peak RSS {peak / 1e6:.0f} MB reading {size / 1e9:.1f} GB (--cache-size "
                f"{FULL_CACHE}) < 150 MB + {FULL_CACHE}",
                peak < 150e6 + FULL_CACHE_BYTES,
            )
        )
    for what, ok in verdicts:
        print(f"{'meets ' if ok else 'MISSES'}  {what}")
    return 0


FULL_CACHE, FULL_CACHE_BYTES = "64M", 64 << 20


def full_cache_rss() -> tuple[int, int] | None:
    """The minbase tree does not fill a 256M cache: read the ~2 GB layer of `make_rootfs.sh --big` (if it was
    built) through a small cache too. (uncompressed bytes read, peak RSS in bytes)"""
    big_tar = BENCH_DIR / "big.tar"
    if not big_tar.exists():
        return None
    blob = WORK / "big.blob"
    if not blob.exists():
        subprocess.run(
            [*NYDUS, "pack", "-q", str(big_tar), "-o", str(blob)],
            check=True,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
    mp = Path(tempfile.mkdtemp(prefix="nydus-bench-mount-big-"))
    try:
        subprocess.run(
            [
                *NYDUS,
                "mount",
                "--cache-size",
                FULL_CACHE,
                "--log-file",
                str(WORK / "mount.log"),
                str(blob),
                str(mp),
            ],
            check=True,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        pid = int(os.getxattr(mp, "user.nydus.mount.pid"))
        out = subprocess.run(
            ["sh", "-c", "tar -cf - . | wc -c"], cwd=mp / "rootfs", check=True, capture_output=True, text=True
        ).stdout
        peak = rss_kib(pid)[1] * 1024
        subprocess.run([*NYDUS, "umount", str(mp)], check=True, env=ENV)
        return int(out.strip()), peak
    finally:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        shutil.rmtree(mp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
