"""Shared test fixtures: where the real vectors are, and how tests needing them or erofs-utils skip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("NYDUS_VECTORS", ROOT.parent / "shared" / "vectors")).resolve()
REQUIRE_VECTORS = os.environ.get("NYDUS_REQUIRE_VECTORS") == "1"
REQUIRE_FUSE = os.environ.get("NYDUS_REQUIRE_FUSE") == "1"

TOC_BLOB = "nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
DATA_BLOB = "nydus/blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
BOOTSTRAP = "nydus/bootstrap/rafs-v6-2.2.boot"
V5_BOOTSTRAP = "nydus/repeatable/sha256-nocompress-repeatable"


def _missing(reason: str, required: bool) -> None:
    if required:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The real nydus artifacts in ../shared/vectors; skip (fail in CI) when absent."""
    if not (VECTORS / "README.md").is_file():
        _missing(f"real nydus vectors not found at {VECTORS}", REQUIRE_VECTORS)
    return VECTORS


@pytest.fixture(scope="session")
def fsck_erofs() -> str:
    path = shutil.which("fsck.erofs")
    if path is None:
        _missing("fsck.erofs (Debian erofs-utils) is not installed", REQUIRE_VECTORS)
    return path
