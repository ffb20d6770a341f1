"""The real nydus tools as test oracles: where `make oracle` put them, how to run them, and a real
`nydusd` FUSE mount that is always taken down.

The programs are found through ``NYDUS_ORACLE`` (the directory `make oracle` prints last), else in the
cache `oracle/build.sh` writes to, keyed by the nydus source tarball's sha256. Without them the tests
that need them skip with one line saying how to get them; with ``NYDUS_REQUIRE_ORACLE=1`` (as in CI)
they fail instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _shared() -> Path:
    """The shared folder: ``NYDUS_SHARED``, else beside the checkout, else (a clone made elsewhere) beside the
    checkout it was cloned from, where `make oracle` finds the sources too."""
    given = os.environ.get("NYDUS_SHARED")
    if given:
        return Path(given)
    beside = ROOT.parent / "shared"
    if not (beside / "oracle").is_dir():
        origin = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True
        ).stdout.strip()
        if origin.startswith("/") and (Path(origin).parent / "shared" / "oracle").is_dir():
            return Path(origin).parent / "shared"
    return beside


SHARED = _shared()
TARBALL = SHARED / "oracle" / "nydus-2.4.4-src.tar.gz"
REQUIRE_ORACLE = os.environ.get("NYDUS_REQUIRE_ORACLE") == "1"
PROGRAMS = ("nydus-image", "nydusd", "nydusify", "nydus-converter")
# A real tool that takes longer than this on the test inputs is hung, not slow.
TIMEOUT = 300
#: `nydus-image create` as the snapshotter runs it for a layer tar (its Pack), less the prefetch policy.
TAR_RAFS = ("--type", "tar-rafs", "--fs-version", "6", "--whiteout-spec", "none")
INLINE = (*TAR_RAFS, "--blob-inline-meta", "--features", "blob-toc")
#: The fixture and vector tars nydus-image reads as the tar says. It refuses the others (test_oracle_fields
#: names each with its reason), and misreads longnames.tar (test_oracle_reader shows where).
NYDUS_IMAGE_SOURCES = ["fixture:dedup.tar", "fixture:whiteouts.tar", "vector:all-entry-type.tar"]


def _default_dir() -> Path | None:
    if not TARBALL.is_file():
        return None
    digest = hashlib.sha256(TARBALL.read_bytes()).hexdigest()
    cache = os.environ.get("NYDUS_ORACLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nydus-inspect", "oracle"
    )
    return Path(cache) / f"nydus-{digest[:16]}" / "bin"


def find_oracle() -> Path | None:
    """The directory holding every oracle program, or None."""
    given = os.environ.get("NYDUS_ORACLE")
    where = Path(given) if given else _default_dir()
    if where is None or not all(os.access(where / p, os.X_OK) for p in PROGRAMS):
        return None
    return where


class OracleError(AssertionError):
    """A real tool failed: its command line and the end of what it printed."""


@contextlib.contextmanager
def fuse_served(proc: subprocess.Popen, mnt: Path, timeout: float, failed, daemonizes: bool = False):
    """Wait for the FUSE daemon ``proc`` to mount ``mnt`` (``failed()`` says why it did not); unmount, and kill
    a hung daemon, on exit. ``daemonizes``: the program exits 0 once the mount runs in its background child."""
    try:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mnt):
            ended = proc.poll()
            if (ended is not None and not (daemonizes and ended == 0)) or time.monotonic() > deadline:
                raise OracleError(failed())
            time.sleep(0.05)
        yield mnt
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], capture_output=True)
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Oracle:
    """The built programs, each run in a temporary directory with a timeout."""

    bin: Path

    @property
    def nydus_image(self) -> str:
        return str(self.bin / "nydus-image")

    @property
    def nydusd(self) -> str:
        return str(self.bin / "nydusd")

    @property
    def nydusify(self) -> str:
        return str(self.bin / "nydusify")

    @property
    def converter(self) -> str:
        return str(self.bin / "nydus-converter")

    def run(self, program: str, *args, cwd=None, ok: bool = True, timeout: int = TIMEOUT):
        argv = [str(self.bin / program), *map(str, args)]
        # A Rust backtrace would push the error itself out of the message.
        env = {**os.environ, "RUST_BACKTRACE": "0"}
        proc = subprocess.run(argv, capture_output=True, cwd=cwd, timeout=timeout, env=env)
        if ok and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-12:]
            raise OracleError(f"{' '.join(argv)} exited {proc.returncode}:\n" + "\n".join(tail))
        return proc

    def create(self, source, out_dir: Path, *opts, name: str = "layer") -> tuple[Path | None, Path]:
        """``nydus-image create`` -> (bootstrap, blob); ``opts`` are extra options (``--type`` included).
        With ``--blob-inline-meta`` the bootstrap is inside the blob, and None is returned for it."""
        out_dir.mkdir(parents=True, exist_ok=True)
        blob = out_dir / f"{name}.blob"
        if "--blob-inline-meta" in opts:
            self.run("nydus-image", "create", "--log-level", "warn", "--blob", blob, *opts, source)
            return None, blob
        boot = out_dir / f"{name}.boot"
        self.run(
            "nydus-image", "create", "--log-level", "warn", "--bootstrap", boot, "--blob", blob, *opts, source
        )
        return boot, blob

    def check(self, bootstrap: Path, *opts) -> subprocess.CompletedProcess:
        return self.run("nydus-image", "check", "--bootstrap", bootstrap, *opts)

    @contextlib.contextmanager
    def mount(self, bootstrap: Path, blob_dir: Path, work: Path, *, validate: bool = False):
        """A real ``nydusd`` FUSE mount of ``bootstrap`` over the blobs in ``blob_dir`` (localfs backend,
        named by blob id). Yields the mount point; unmounts (and kills a hung daemon) also on failure.

        nydusd refuses ``digest_validate`` for RAFS v6 ("doesn't support integrity validation yet"), so
        the daemon does not check chunk digests: the comparison of every byte with the source does.
        ``validate``: a RAFS v5 bootstrap, whose chunk digests nydusd does check when asked (every read)."""
        work.mkdir(parents=True, exist_ok=True)
        mnt, cache = work / "mnt", work / "cache"
        mnt.mkdir(exist_ok=True)
        cache.mkdir(exist_ok=True)
        config = {
            "device": {
                "backend": {"type": "localfs", "config": {"dir": str(blob_dir)}},
                "cache": {"type": "blobcache", "config": {"work_dir": str(cache)}},
            },
            "mode": "direct",
            "digest_validate": validate,
            "iostats_files": False,
            "enable_xattr": True,
        }
        (work / "nydusd.json").write_text(json.dumps(config))
        log = work / "nydusd.log"
        argv = [
            self.nydusd,
            "--config",
            str(work / "nydusd.json"),
            "--bootstrap",
            str(bootstrap),
            "--mountpoint",
            str(mnt),
            "--log-level",
            "warn",
            # nydusd raises its open-file limit to a million unless told not to; a sandbox may refuse that.
            "--rlimit-nofile",
            "0",
            "--log-file",
            str(log),
        ]
        with open(work / "nydusd.out", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def failed() -> str:
            said = b""
            for f in (log, work / "nydusd.out"):
                if f.exists():
                    said += f.read_bytes()[-2000:]
            return f"nydusd did not mount {bootstrap} (exit {proc.poll()}):\n{said.decode(errors='replace')}"

        with fuse_served(proc, mnt, 60, failed) as served:
            yield served

    def log_of(self, work: Path) -> str:
        log = work / "nydusd.log"
        return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    """The real nydus tools; skip (fail in CI) when `make oracle` has not built them."""
    where = find_oracle()
    if where is None:
        reason = "the real nydus tools are not built: run `make oracle` (or set NYDUS_ORACLE=DIR)"
        if REQUIRE_ORACLE:
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return Oracle(where)


# ---------------------------------------------------------------------------- erofs-utils 1.9.3
EROFS_TARBALL = SHARED / "oracle" / "erofs-utils-1.9.3-src.tar.gz"
EROFS_PROGRAMS = ("mkfs.erofs", "fsck.erofs", "dump.erofs", "erofsfuse")


def find_erofs_utils() -> Path | None:
    """The directory holding erofs-utils 1.9.3, or None: ``NYDUS_EROFS_UTILS``, else the sibling of the nydus
    cache directory that `make oracle` builds (``erofs-utils-<sha256[:16]>/bin``, keyed by its own tarball)."""
    given = os.environ.get("NYDUS_EROFS_UTILS")
    where: Path | None = Path(given) if given else None
    if where is None and EROFS_TARBALL.is_file():
        digest = hashlib.sha256(EROFS_TARBALL.read_bytes()).hexdigest()
        cache = os.environ.get("NYDUS_ORACLE_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nydus-inspect", "oracle"
        )
        where = Path(cache) / f"erofs-utils-{digest[:16]}" / "bin"
    if where is None or not all(os.access(where / p, os.X_OK) for p in EROFS_PROGRAMS):
        return None
    return where


@dataclass(frozen=True)
class ErofsUtils:
    """erofs-utils 1.9.3 as built by `make oracle` (Debian's 1.5 has no --tar and only lz4)."""

    bin: Path

    def run(self, program: str, *args, ok: bool = True, timeout: int = TIMEOUT, input: bytes | None = None):
        argv = [str(self.bin / program), *map(str, args)]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, input=input)
        if ok and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-12:]
            raise OracleError(f"{' '.join(argv)} exited {proc.returncode}:\n" + "\n".join(tail))
        return proc

    def mkfs(self, image: Path, source: Path, *opts) -> Path:
        """``mkfs.erofs [opts] IMAGE SOURCE`` (a directory, or a tar with ``--tar=f``), fixed build time and
        uuid; files keep their own mtimes."""
        self.run(
            "mkfs.erofs",
            "--quiet",
            "-T0",
            "--mkfs-time",
            "-U",
            "00000000-0000-0000-0000-000000000000",
            *opts,
            image,
            source,
        )
        return image

    def extract(self, image: Path, out: Path, devices: tuple[Path, ...] = ()) -> Path:
        """``fsck.erofs --extract=OUT`` with owners, modes and times as stored (it checks the image as it goes);
        ``devices``: the image's extra devices in order (``--device``)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        devs = [f"--device={d}" for d in devices]
        self.run("fsck.erofs", *devs, f"--extract={out}", "--preserve", "--xattrs", "--force", image)
        return out

    @contextlib.contextmanager
    def mounted(self, image: Path, mnt: Path, devices: tuple[Path, ...] = ()):
        """``erofsfuse [--device=DEV...] IMAGE MNT``, taken down on exit (also on failure)."""
        mnt.mkdir(parents=True, exist_ok=True)
        log = mnt.parent / f"{mnt.name}.erofsfuse.log"
        devs = [f"--device={d}" for d in devices]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(self.bin / "erofsfuse"), *devs, str(image), str(mnt)], stdout=out, stderr=out
            )

        def failed() -> str:
            return f"erofsfuse did not mount {image} (exit {proc.poll()}): {log.read_text(errors='replace')[-2000:]}"

        with fuse_served(proc, mnt, 30, failed, daemonizes=True) as served:
            yield served


@pytest.fixture(scope="session")
def erofs_utils() -> ErofsUtils:
    """erofs-utils 1.9.3; skip (fail in CI) when `make oracle` has not built it."""
    where = find_erofs_utils()
    if where is None:
        reason = "erofs-utils 1.9.3 is not built: run `make oracle` (or set NYDUS_EROFS_UTILS=DIR)"
        if REQUIRE_ORACLE:
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return ErofsUtils(where)


# ---------------------------------------------------------------------------- estargz-build
@dataclass(frozen=True)
class EstargzBuild:
    """``estargz-build`` (oracle/estargz): eStargz layers written by the stargz snapshotter's estargz module."""

    program: Path

    def build(
        self, src: Path, out: Path, *, chunk_size: int = 0, min_chunk_size: int = 0, toc: Path | None = None
    ) -> dict:
        """``estargz-build SRC OUT`` -> what it prints: tocDigest (the toc.digest annotation), diffID, digest,
        size. ``toc``: also write the TOC JSON there, as stored in the layer. ``min_chunk_size``: the writer's
        WithMinChunkSize (small files share gzip members, their entries carry innerOffset)."""
        argv = [str(self.program)]
        if chunk_size:
            argv += ["--chunk-size", str(chunk_size)]
        if min_chunk_size:
            argv += ["--min-chunk-size", str(min_chunk_size)]
        if toc is not None:
            argv += ["--toc", str(toc)]
        proc = subprocess.run([*argv, str(src), str(out)], capture_output=True, timeout=TIMEOUT)
        if proc.returncode != 0:
            raise OracleError(
                f"{' '.join(argv)} {src} {out} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}"
            )
        return json.loads(proc.stdout)


@pytest.fixture(scope="session", name="estargz_build")
def estargz_build_fixture() -> EstargzBuild:
    """estargz-build from the oracle directory; skip (fail in CI) when `make oracle` has not built it."""
    where = find_oracle()
    if where is None or not os.access(where / "estargz-build", os.X_OK):
        reason = "estargz-build is not built: run `make oracle` (or set NYDUS_ORACLE=DIR)"
        if REQUIRE_ORACLE:
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return EstargzBuild(where / "estargz-build")
