"""One verification run: the report being built, progress and cancellation, finding limits, chunk owners."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..layer import Layer
from ..query import FileIndex
from .ahead import _Ahead
from .findings import Cancelled, Report

if TYPE_CHECKING:
    from .findings import Finding, Progress


# ---------------------------------------------------------------------------- the driver
class _Run:
    def __init__(
        self,
        layer: Layer,
        progress: Progress | None,
        cancel: Callable[[], bool] | None,
        limit: int,
        workers: int,
    ) -> None:
        self.layer = layer
        self.report = Report(layer.path)
        self.progress = progress
        self.cancel = cancel
        self.limit = limit
        self.workers = workers or os.cpu_count() or 1
        self.index: FileIndex | None = None
        self._counts: dict[str, int] = {}
        self.ahead = _Ahead(self)
        self.verity_root: bytes | None = None  # a plain EROFS image's dm-verity root hash, when given
        self.verity_salt: bytes | None = None

    def add(self, finding: Finding) -> None:
        n = self._counts.get(finding.check, 0) + 1
        self._counts[finding.check] = n
        if n > self.limit:
            self.report.suppressed[finding.check] = self.report.suppressed.get(finding.check, 0) + 1
        else:
            self.report.findings.append(finding)

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"verification cancelled during {stage}")
        if self.progress is not None:
            self.progress(stage, done, total)

    def count(self, stage: str, n: int = 1) -> None:
        self.report.checked[stage] = self.report.checked.get(stage, 0) + n

    def owners(self, blob_index: int | None, ci: int) -> tuple[str, ...]:
        if self.index is None or blob_index is None:
            return ()
        return tuple(self.index.owners(blob_index, ci))
