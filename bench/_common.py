"""Shared helpers for the side-by-side benchmarks: run commands, take medians, print ratios.

Machines here are shared and noisy: every figure is the median of several runs, and comparisons are
ratios measured in the same run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("NYDUS_BENCH_DIR", "/var/tmp/nydus-bench"))
PY = sys.executable
NYDUS = [PY, "-m", "nydus_inspect"]


def _compile_bytecode() -> None:
    """Byte-compile the package once, as installing it does: with PYTHONDONTWRITEBYTECODE set (or a
    tree just edited) every timed run would otherwise compile our sources again at start-up."""
    import compileall

    for pkg in ("nydus_inspect", "tui"):
        compileall.compile_dir(str(ROOT / pkg), quiet=1)


_compile_bytecode()


TIME = shutil.which("time") or "/usr/bin/time"


def run_once(
    cmd: list[str] | str, *, stdin=None, stdout=subprocess.DEVNULL, shell: bool = False
) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in KiB, CPU seconds: user + system) of one run; raises if the command fails."""
    wall, rss, user, system = run_times(cmd, stdin=stdin, stdout=stdout, shell=shell)
    return wall, rss, user + system


def run_times(
    cmd: list[str] | str, *, stdin=None, stdout=subprocess.DEVNULL, shell: bool = False
) -> tuple[float, int, float, float]:
    """(wall seconds, peak RSS in KiB, user CPU seconds, system CPU seconds) of one run.

    RSS comes from GNU time, whose child is forked from that small program: rusage taken here would
    count the pre-exec copy of this (large) Python process instead.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        argv = ["sh", "-c", cmd] if shell else list(cmd)
        full = [TIME, "-f", "%M %U %S", "-o", tf.name, *argv]
        t0 = time.perf_counter()
        proc = subprocess.run(
            full,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
            raise SystemExit(
                f"benchmark command failed ({proc.returncode}): {shown}\n{proc.stderr.decode()[-2000:]}"
            )
        # GNU time's last line is ours; lines before it are the command's own complaints (a signal).
        last = tf.read().strip().splitlines()[-1:] or ["0 0 0"]
        rss, user, system = last[0].split()
        return wall, int(rss), float(user), float(system)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def drop_caches(required: bool = True) -> bool:
    """Write back and drop the page cache, so that the next run reads its input cold. Only root may: a bench
    that cannot do without it fails; one that can (``required=False``) is told False and says it ran warm."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except PermissionError:
        if required:
            raise
        return False
    return True


def measure(name: str, cmd, repeat: int = 5, setup=None, **kw) -> dict:
    walls, rss, cpu = [], [], []
    for _ in range(repeat):
        if setup:
            setup()
        w, r, c = run_once(cmd, **kw)
        walls.append(w)
        rss.append(r)
        cpu.append(c)
    return _row(name, walls, rss, cpu)


def _row(name: str, walls: list[float], rss: list[int], cpu: list[float]) -> dict:
    return {
        "name": name,
        "median": statistics.median(walls),
        "min": min(walls),
        "cpu": statistics.median(cpu),
        "rss_kib": max(rss),
        "runs": walls,
    }


def measure_together(
    commands: list[tuple[str, list[str] | str]], repeat: int = 5, outputs: dict[str, Path] | None = None
) -> list[dict]:
    """``measure`` of each command, run in turns (A B C A B C ...): the load of a shared machine drifts
    over a run, and taking turns spreads the drift over all of them instead of tilting the ratios.

    ``outputs[name]`` is removed before each run of that command, untimed: replacing an old output costs freeing it, which one
    tool pays first (``zstd -f`` unlinks it) and another last (ours rename over it, so that a failed run
    loses nothing); the figures are then of the work alone.

    Each run starts after ``sync``, untimed: otherwise the gigabytes an earlier run left dirty in the page
    cache are written back during the next one, and whichever command follows a big write pays for it."""
    walls: dict[str, list[float]] = {name: [] for name, _ in commands}
    rss: dict[str, list[int]] = {name: [] for name, _ in commands}
    cpu: dict[str, list[float]] = {name: [] for name, _ in commands}
    for _ in range(repeat):
        for name, cmd in commands:
            if outputs and name in outputs:
                out = Path(outputs[name])
                if out.is_dir():
                    shutil.rmtree(out)
                out.unlink(missing_ok=True)
            os.sync()
            w, r, c = run_once(cmd)
            walls[name].append(w)
            rss[name].append(r)
            cpu[name].append(c)
    return [_row(name, walls[name], rss[name], cpu[name]) for name, _ in commands]


def table(rows: list[dict], baseline: str | None = None) -> None:
    base = next((r["median"] for r in rows if r["name"] == baseline), None)
    print(f"{'command':<34} {'median s':>9} {'min s':>8} {'CPU s':>7} {'peak RSS MiB':>13} {'ratio':>7}")
    for r in rows:
        ratio = f"{r['median'] / base:.2f}x" if base else ""
        print(
            f"{r['name']:<34} {r['median']:>9.3f} {r['min']:>8.3f} {r['cpu']:>7.2f} {r['rss_kib'] / 1024:>13.1f}"
            f" {ratio:>7}"
        )


def ratio(rows: list[dict], a: str, b: str) -> float:
    ma = next(r["median"] for r in rows if r["name"] == a)
    mb = next(r["median"] for r in rows if r["name"] == b)
    return ma / mb


def ensure_rootfs() -> tuple[Path, Path]:
    tar = BENCH_DIR / "rootfs.tar"
    rootfs = BENCH_DIR / "rootfs"
    if not tar.exists() or not rootfs.exists():
        subprocess.run(["bash", str(ROOT / "bench" / "make_rootfs.sh")], check=True)
    return rootfs, tar


def load_note() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""
