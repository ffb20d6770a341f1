"""Long coverage-guided fuzz runs with atheris: `python tests/fuzz/run_atheris.py TARGET [RUNS [CORPUS_DIR]]`.

Limits as the acceptance asks: -timeout=1 (no input may take over 1 s) and -rss_limit_mb=256. The
seed corpus is cut from ../shared/vectors (NYDUS_VECTORS overrides) into CORPUS_DIR, which keeps what the run
finds; without it, the corpus lives in the scratch directory and goes with it. Prints libFuzzer's summary.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Linux keeps a process's peak RSS across exec, so a runner started by a big pytest worker would begin at
# that worker's peak and trip -rss_limit_mb at once. A forked child starts its own count: run the fuzzer there.
# The targets' scratch files go in a directory made here and removed once the child ends (libFuzzer ends it
# with exit(), which runs no Python cleanup).
if __name__ == "__main__":
    import shutil

    os.environ["NYDUS_FUZZ_SCRATCH"] = tempfile.mkdtemp(
        prefix="nydus-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    _pid = os.fork()
    if _pid:
        _status = os.waitpid(_pid, 0)[1]
        shutil.rmtree(os.environ["NYDUS_FUZZ_SCRATCH"], ignore_errors=True)
        sys.exit(os.waitstatus_to_exitcode(_status) & 0xFF)

import atheris  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Imported before the instrumented block: the mount target runs on them, and they are not ours to cover.
import pyfuse3  # noqa: E402, F401
import trio  # noqa: E402, F401

with atheris.instrument_imports():
    from targets import TARGETS, seeds

    import nydus_inspect.chunks.decode  # noqa: F401
    import nydus_inspect.chunks.variants  # noqa: F401
    import nydus_inspect.chunks.zran  # noqa: F401
    import nydus_inspect.erofs  # noqa: F401
    import nydus_inspect.erofs_codecs  # noqa: F401
    import nydus_inspect.formats.blob_meta  # noqa: F401
    import nydus_inspect.formats.erofs  # noqa: F401
    import nydus_inspect.formats.erofs_zmap  # noqa: F401
    import nydus_inspect.formats.rafs_v5  # noqa: F401
    import nydus_inspect.formats.rafs_v6  # noqa: F401
    import nydus_inspect.formats.tar_header  # noqa: F401
    import nydus_inspect.formats.toc  # noqa: F401
    import nydus_inspect.formats.zran  # noqa: F401
    import nydus_inspect.layer  # noqa: F401
    import nydus_inspect.model  # noqa: F401
    import nydus_inspect.mount.entries  # noqa: F401
    import nydus_inspect.mount.fs  # noqa: F401
    import nydus_inspect.mount.sources  # noqa: F401
    import nydus_inspect.targz  # noqa: F401


def main() -> None:
    name = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    vectors = os.environ.get("NYDUS_VECTORS", str(ROOT.parent / "shared" / "vectors"))
    corpus = Path(
        sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.environ["NYDUS_FUZZ_SCRATCH"], "corpus")
    )
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(vectors)[name]):
        (corpus / f"seed{i}").write_bytes(seed)
    target = TARGETS[name]
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            "-timeout=1",
            "-rss_limit_mb=256",
            "-max_len=65536",
            "-print_final_stats=1",
            str(corpus),
        ],
        target,
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()
