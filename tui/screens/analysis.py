"""Analysis: ``nydus-inspect analyze`` on the opened image — per layer what it adds, modifies, removes and
wastes, the wasted files and the whiteouts, and the image's figures (efficiency, duplicate chunks, prefetch).

The image is every opened layer, lowest first, when several were opened; else the one opened file (a layer
blob, a merged bootstrap with its blobs, an OCI layout). The analysis reads every layer's tree: it runs in a
child process (as the full walk does), and the screen shows its progress meanwhile.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Label
from textual.worker import get_current_worker

from nydus_inspect import NydusInspectError

from ..data import LayerView, bytes_text, size_text
from ..jobs import JobCancelled, JobFailed, analyze_job, run_job
from ..widgets import KeyValue
from .base import NydusScreen

LAYER_COLUMNS = (
    "#",
    "added",
    "modified",
    "removed",
    "stored",
    "wasted",
    "in image",
    "ratio",
    "dup chunks",
    "blob",
)
WASTED_COLUMNS = ("bytes", "path", "stored by", "what happened")


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _tally(t) -> str:
    return f"{t.count:,} ({size_text(t.bytes)})"


class AnalysisScreen(NydusScreen):
    NAME = "Analysis"
    SEARCH_HINT = "search the wasted files and whiteouts (path)"
    BINDINGS = [Binding("r", "rerun", "Analyze again")]

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[tuple, object] = {}  # image key -> Analysis, or the error text
        self.progress: tuple[int, int] = (0, 0)

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="analysis-body"):
            yield KeyValue(id="analysis-image", classes="pane")
            yield Label("Layers, lowest first", classes="section-title")
            yield DataTable(id="analysis-layers", cursor_type="row", zebra_stripes=True)
            yield Label("Wasted files, largest first, then whiteouts", classes="section-title")
            yield DataTable(id="analysis-wasted", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#analysis-layers", DataTable).add_columns(*LAYER_COLUMNS)
        self.query_one("#analysis-wasted", DataTable).add_columns(*WASTED_COLUMNS)
        super().on_mount()

    # -- which image, and its analysis
    def image_args(self) -> tuple[list[str], str | None, list[str] | None]:
        views = self.nydus.views
        if len(views) > 1:
            return [v.path for v in views], None, None
        ly = self.view.layer
        return [ly.path], ly.blob_dir, ly.extra_blobs

    def key(self) -> tuple:
        paths, blob_dir, blobs = self.image_args()
        return (tuple(paths), blob_dir, tuple(blobs or ()))

    def load(self, view: LayerView) -> None:
        result = self.results.get(self.key())
        if result is None:
            self.query_one("#analysis-image", KeyValue).show([("analysis", "analyzing the layers…")], "Image")
            self.query_one("#analysis-layers", DataTable).clear()
            self.query_one("#analysis-wasted", DataTable).clear()
            self._analyze(self.key(), *self.image_args())
        else:
            self.show(result)

    def action_rerun(self) -> None:
        self.results.pop(self.key(), None)
        self.load(self.view)

    @work(thread=True, exclusive=True, group="analysis")
    def _analyze(self, key: tuple, paths: list[str], blob_dir: str | None, blobs: list[str] | None) -> None:
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            self.progress = (done, total)

        try:
            result = run_job(
                analyze_job,
                (paths, blob_dir, blobs),
                on_progress=progress,
                cancelled=lambda: worker.is_cancelled,
                in_process=self.nydus.jobs_in_process,
            )
        except JobCancelled:
            return
        except (JobFailed, NydusInspectError) as exc:
            result = str(exc) or type(exc).__name__
        if not worker.is_cancelled:
            self.app.call_from_thread(self._done, key, result)

    def _done(self, key: tuple, result) -> None:
        self.results[key] = result
        if key == self.key():
            self.show(result)

    # -- showing it
    def show(self, a) -> None:
        image = self.query_one("#analysis-image", KeyValue)
        layers = self.query_one("#analysis-layers", DataTable)
        wasted = self.query_one("#analysis-wasted", DataTable)
        layers.clear()
        wasted.clear()
        if isinstance(a, str):
            image.show([("analysis", f"failed: {a}")], "Image")
            return
        f = a.figures()
        image.show(
            [
                ("layers", str(f["layers"])),
                (
                    "final image",
                    f"{_count(f['final_entries'], 'entry', 'entries')}, {_count(f['final_files'], 'file', 'files')}, "
                    f"{bytes_text(f['final_bytes'])}",
                ),
                ("efficiency", f"{f['efficiency']:.4f} (1 - wasted / stored)"),
                (
                    "wasted",
                    f"{bytes_text(f['wasted_bytes'])} of {bytes_text(f['stored_bytes'])} stored; "
                    f"user wasted {f['user_wasted_fraction']:.2%}",
                ),
                (
                    "duplicate chunks",
                    f"{f['duplicate_chunks']:,} ({bytes_text(f['duplicate_chunk_bytes'])} "
                    "a chunk dictionary would save)",
                ),
                ("compression", f"{f['compression_ratio']:.2f}x"),
                ("prefetch", f"{f['prefetch_coverage']:.1%} of the file bytes ({a.prefetch_source})"),
            ],
            "Image",
        )
        for lf in a.layers:
            layers.add_row(
                str(lf.index),
                _tally(lf.added),
                _tally(lf.modified),
                _tally(lf.removed),
                size_text(lf.stored_bytes),
                size_text(lf.wasted_bytes),
                f"{lf.final_entries:,}",
                f"{lf.compression_ratio:.2f}x",
                f"{lf.duplicate_chunks:,} ({size_text(lf.duplicate_bytes)})",
                lf.blob_id[:19],
            )
        for w in a.wasted:
            wasted.add_row(size_text(w.size), w.path, f"layer {w.layer}", f"{w.how} by layer {w.by}")
        for wo in a.whiteouts:
            wasted.add_row(
                size_text(wo.removed.bytes), wo.path, f"layer {wo.layer}", str(wo).split(": ", 1)[1]
            )

    def search(self, text: str, again: bool) -> None:
        table = self.query_one("#analysis-wasted", DataTable)
        start = table.cursor_row + 1 if again else 0
        needle = text.lower()
        n = table.row_count
        for k in range(n):
            i = (start + k) % n
            if needle in str(table.get_row_at(i)[1]).lower():
                table.move_cursor(row=i)
                table.focus()
                return
        self.notify(f"no wasted file or whiteout matches {text!r}", severity="warning")
