"""Short coverage-guided fuzz runs of every parser target (atheris), as a regression guard.

The long runs (1M+ executions) use the same targets: `python tests/fuzz/run_atheris.py TARGET RUNS`.
A crash, an input over 1 s or over 256 MB RSS makes libFuzzer exit non-zero and this test fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.targets import TARGETS

RUNNER = Path(__file__).resolve().parent / "fuzz" / "run_atheris.py"
RUNS = {"layer": 1500, "rafs_v6": 3000, "rafs_v5": 3000, "mount": 1500, "erofs": 3000, "targz_ref": 3000}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_short_run(target, vectors, tmp_path):
    pytest.importorskip("atheris", reason="atheris (pip) is needed for coverage-guided fuzzing")
    runs = RUNS.get(target, 10_000)
    proc = subprocess.run(
        [sys.executable, str(RUNNER), target, str(runs)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "NYDUS_VECTORS": str(vectors)},
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"fuzz target {target} failed:\n{tail}"
    assert f"Done {runs} runs" in proc.stderr, tail


def test_targets_accept_their_seeds(vectors):
    """Every seed runs through its target cleanly (the corpus is meaningful, not rejected at once)."""
    from fuzz.targets import seeds

    for name, inputs in seeds(str(vectors)).items():
        assert inputs, name
        for data in inputs:
            TARGETS[name](data)


def test_variant_seeds_read_whole(oracle, monkeypatch):
    """The seeds of the layer kinds nydus-image writes (batch, encrypted, targz-ref, tarfs, an old no-ToC
    blob, external files) and the .tar.gz seeds of the targz-ref indexer get through their targets with no
    error at all: every file read and checked, every table parsed. A seed refused at once would leave those
    paths unfuzzed."""
    from fuzz import targets

    made = targets._variant_seeds()
    counts = {name: len(inputs) for name, inputs in made.items()}
    assert counts == {"layer": 8, "blob_meta": 2, "zran": 1, "mount": 3}, counts
    monkeypatch.setattr(targets, "EXPECTED", ())
    for name, inputs in [*made.items(), ("targz_ref", targets._targz_seeds())]:
        for data in inputs:
            assert len(data) <= 65536, name  # the fuzzer's -max_len: a longer seed would be cut
            TARGETS[name](data)
