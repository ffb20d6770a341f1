"""A nydus image mounted lazily from a registry, side by side with the same image mounted from local files.

The Debian minbase rootfs tar is converted to a nydus image by our `convert` and pushed with skopeo to Debian's
docker-registry, started here on 127.0.0.1. Each repetition, in turns:

  remote cold   `mount docker://…` with an empty chunk cache: time until the mount answers; then
                `cat /etc/os-release` and the bytes it made the mount fetch (user.nydus.fetched before and
                after) against the blob's size; then, on a new mount with an empty cache, a cold
                `tar -cf - . | wc -c` of the whole tree
  remote warm   `mount docker://…` again with the chunk cache the cold tar filled: ready time and cold tar
  local         `mount LAYOUT` of the same image on disk: ready time and cold tar

"Cold": the page cache is dropped before each tar (`sync; echo 3 > /proc/sys/vm/drop_caches`), so the local
mount reads its blob from disk as the registry reads its files. Figures are medians.
Targets: mount ready < 1 s, cat /etc/os-release fetches < 2% of the blob, the cold tar over the registry at
most 1.5x the local one, and the warm one equal to it.

Run: `python bench/bench_registry.py` (root, for drop_caches and FUSE). BENCH_REPEAT sets repetitions
(default 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, NYDUS, ROOT, drop_caches, ensure_rootfs, load_note  # noqa: E402

WORK = BENCH_DIR / "registry"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, env=ENV, **kw)
    if proc.returncode != 0:
        raise SystemExit(
            f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.decode()[-2000:]}"
        )
    return proc


def nydus_layout(tar: Path) -> Path:
    """The rootfs as an OCI image (one uncompressed layer), converted by our convert; made once per tar."""
    st = tar.stat()
    key = hashlib.sha256(f"{tar}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = WORK / f"nydus-{key}"
    if (out / "index.json").is_file():
        return out
    src = WORK / f"oci-{key}"
    shutil.rmtree(src, ignore_errors=True)
    blobs = src / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    h = hashlib.sha256()
    with open(tar, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    layer_digest = h.hexdigest()
    shutil.copyfile(tar, blobs / layer_digest)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
    }
    cdigest, csize = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{layer_digest}",
                "size": st.st_size,
            }
        ],
    }
    mdigest, msize = put(json.dumps(manifest).encode())
    (src / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": manifest["mediaType"], "digest": mdigest, "size": msize}],
    }
    (src / "index.json").write_text(json.dumps(index))
    shutil.rmtree(out, ignore_errors=True)
    run([*NYDUS, "convert", str(src), str(out)])
    shutil.rmtree(src)
    return out


class Registry:
    """Debian's docker-registry on a free port of 127.0.0.1, its storage under WORK."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        root = WORK / "storage"
        shutil.rmtree(root, ignore_errors=True)
        config = WORK / "registry.yml"
        config.write_text(
            f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        exe = shutil.which("docker-registry")
        if exe is None:
            raise SystemExit("docker-registry is needed (apt-get install docker-registry)")
        self.proc = subprocess.Popen(
            [exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the registry did not start") from None
                time.sleep(0.1)
        self.host = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def mount(source: str, mp: Path, *extra: str) -> float:
    """Seconds from starting `mount` until it returns (it returns once the mount answers)."""
    mp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run([*NYDUS, "mount", source, str(mp), "--log-file", str(WORK / "mount.log"), *extra])
    return time.perf_counter() - t0


def umount(mp: Path) -> None:
    run([*NYDUS, "umount", str(mp)], timeout=120)


def tar_seconds(mp: Path) -> float:
    drop_caches()
    t0 = time.perf_counter()
    out = subprocess.run(f"tar -cf - -C {mp}/rootfs . | wc -c", shell=True, capture_output=True, check=True)
    seconds = time.perf_counter() - t0
    if int(out.stdout) < 1 << 20:
        raise SystemExit(f"tar over {mp} gave {int(out.stdout)} bytes")
    return seconds


def fetched(mp: Path) -> int:
    return int(os.getxattr(mp, "user.nydus.fetched"))


def main() -> int:
    if os.geteuid() != 0:
        print("bench_registry needs root (FUSE, drop_caches)", file=sys.stderr)
        return 2
    _, tar = ensure_rootfs()
    WORK.mkdir(parents=True, exist_ok=True)
    layout = nydus_layout(tar)
    reg = Registry()
    try:
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout}",
                f"docker://{reg.host}/minbase:nydus",
            ],
            check=True,
            capture_output=True,
        )
        ref = f"docker://{reg.host}/minbase:nydus"
        mp = WORK / "mnt"
        figures: dict[str, list[float]] = {}

        def note(name: str, value: float) -> None:
            figures.setdefault(name, []).append(value)

        for _ in range(REPEAT):
            cold = WORK / "cache-cold"
            shutil.rmtree(cold, ignore_errors=True)
            note("ready remote cold", mount(ref, mp, "--cache-dir", str(cold)))
            before = fetched(mp)
            subprocess.run(["cat", str(mp / "rootfs/etc/os-release")], check=True, capture_output=True)
            note("cat os-release fetched", fetched(mp) - before)
            blob_size = int(os.getxattr(mp, "user.nydus.size"))
            umount(mp)

            shutil.rmtree(cold, ignore_errors=True)
            mount(ref, mp, "--cache-dir", str(cold))
            note("tar remote cold", tar_seconds(mp))
            umount(mp)

            note("ready remote warm", mount(ref, mp, "--cache-dir", str(cold)))
            note("tar remote warm", tar_seconds(mp))
            note("warm fetched", fetched(mp))
            umount(mp)

            note("ready local", mount(str(layout), mp))
            note("tar local", tar_seconds(mp))
            umount(mp)
    finally:
        reg.stop()

    med = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"nydus image of {tar} ({blob_size} bytes of blob) in a local registry; {REPEAT} runs, medians; {load_note()}"
    )
    print(f"{'figure':<26} {'median':>10} {'min':>10}")
    for name, values in figures.items():
        unit = "bytes" if "fetched" in name else "s"
        print(f"{name:<26} {statistics.median(values):>10.3f} {min(values):>10.3f} {unit}")
    cat_pct = 100 * med["cat os-release fetched"] / blob_size
    print(f"mount ready, registry, empty cache: {med['ready remote cold']:.3f} s (target < 1 s)")
    print(
        f"mount ready, registry, warm cache: {med['ready remote warm']:.3f} s; local: {med['ready local']:.3f} s"
    )
    print(
        f"cat /etc/os-release fetched {med['cat os-release fetched']:.0f} bytes = {cat_pct:.2f}% of the blob (target < 2%)"
    )
    print(
        f"cold tar: registry {med['tar remote cold'] / med['tar local']:.2f}x local (target <= 1.5x); "
        f"warm cache {med['tar remote warm'] / med['tar local']:.2f}x local (target 1.0x), "
        f"fetching {med['warm fetched']:.0f} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
