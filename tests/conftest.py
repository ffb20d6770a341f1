"""Shared test fixtures: where the real vectors are, and how tests needing them or erofs-utils skip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from registry_util import registry  # noqa: F401  (a registry of our own on the loopback address)

from oracle import (
    erofs_utils,  # noqa: F401  (the session fixture of erofs-utils 1.9.3)
    oracle,  # noqa: F401  (the session fixture of the real nydus tools)
)

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


def kernel_fuse_problem() -> str | None:
    """Why this process cannot make a FUSE mount, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc.strerror}"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "not root and no fusermount3"
    return None


@pytest.fixture(scope="session")
def fuse_ok() -> None:
    """The kernel side of FUSE (for the real nydusd); skip (fail in CI) when it is missing."""
    problem = kernel_fuse_problem()
    if problem:
        _missing(f"FUSE is unavailable: {problem}", REQUIRE_FUSE)
