"""The screens of the app, one module each; ``SCREENS`` maps mode names to (class, title, help)."""

from __future__ import annotations

from .analysis import AnalysisScreen
from .chunks import ChunksScreen
from .files import FilesScreen
from .help import HelpScreen
from .overview import OverviewScreen
from .toc import TocScreen
from .verify import VerifyScreen

SCREENS = {
    "overview": (OverviewScreen, "Overview", "what was opened: kind, digest, sizes, superblocks, blob table"),
    "toc": (TocScreen, "ToC", "table of contents: entries, per-entry sha256 check, decoded previews"),
    "chunks": (ChunksScreen, "Chunks", "blob.meta chunk table: jump to offset, filter, owning files"),
    "files": (FilesScreen, "Files", "bootstrap tree, node details, chunks and content preview"),
    "verify": (VerifyScreen, "Verify", "full verification with progress, failures and where they are"),
    "analysis": (AnalysisScreen, "Analysis", "per layer: added, modified, removed, wasted; duplicate chunks"),
}

__all__ = [
    "SCREENS",
    "AnalysisScreen",
    "ChunksScreen",
    "FilesScreen",
    "HelpScreen",
    "OverviewScreen",
    "TocScreen",
    "VerifyScreen",
]
