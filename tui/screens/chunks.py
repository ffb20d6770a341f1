"""Chunks: the blob.meta chunk table, virtualised (a million rows scroll like ten), with jump, filter and
search, the owning files of each chunk, and a per-chunk verify."""

from __future__ import annotations

from array import array

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static
from textual.worker import get_current_worker

from nydus_inspect import NydusInspectError

from ..data import FILTER_HELP, JUMP_HELP, ChunkSource, LayerView, content_preview, parse_jump
from ..widgets import ChunkTable, ContentView, KeyValue
from .base import NydusScreen

#: Seconds the cursor must rest before the detail pane follows it.
DETAIL_DELAY = 0.08


class ChunksScreen(NydusScreen):
    NAME = "Chunks"
    SEARCH_HINT = "search: chunk index, digest prefix or file path"
    BINDINGS = [
        Binding("g", "jump", "Jump"),
        Binding("f", "filter", "Filter"),
        Binding("x", "clear_filter", "Clear filter"),
        Binding("v", "verify_chunk", "Verify chunk"),
        Binding("b", "next_blob", "Next blob", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[ChunkSource] = []
        self.source_index = 0
        self.filter_text = ""
        self.busy = ""
        self._detail_timer = None
        self.pending_select: tuple[int | None, int] | None = None
        self.checked: tuple[ChunkSource, int] | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="chunks-body"):
            yield Static(id="chunks-status", classes="about")
            yield ChunkTable(id="chunk-table")
            with Horizontal(id="chunk-side"):
                with VerticalScroll(id="chunk-detail-pane", classes="pane"):
                    yield KeyValue(id="chunk-detail")
                with VerticalScroll(id="chunk-check-pane", classes="pane"):
                    yield Static(id="chunk-check")
                    yield ContentView(id="chunk-data", classes="hex")

    @property
    def table(self) -> ChunkTable:
        return self.query_one(ChunkTable)

    @property
    def source(self) -> ChunkSource | None:
        return self.sources[self.source_index] if self.sources else None

    def load(self, view: LayerView) -> None:
        self.sources = []
        self.source_index = 0
        self.filter_text = ""
        self.table.set_rows(None)
        self.busy = "loading the chunk table…"
        self.update_status()
        self.nydus.ensure_index(view)
        self._load_sources(view)

    def on_mount(self) -> None:
        self.set_interval(0.5, self.update_status, name="chunks-status")
        super().on_mount()

    @work(thread=True, exclusive=True, group="chunks-load")
    def _load_sources(self, view: LayerView) -> None:
        try:
            sources = view.chunk_sources()
            error = None
        except NydusInspectError as exc:
            sources, error = [], str(exc)
        self.app.call_from_thread(self._show_sources, view, sources, error)

    def _show_sources(self, view: LayerView, sources: list[ChunkSource], error: str | None) -> None:
        if view is not self.view:
            return
        self.sources = sources
        self.busy = ""
        if not sources:
            if view.is_erofs:
                self.busy = (
                    f"{view.name} is a plain EROFS image: no nydus chunks; each file's pieces and compressed "
                    "extents (pclusters) are listed on the files screen (4)"
                )
            else:
                self.busy = error or f"{view.name}: no blob.meta and no chunk table describe chunks here"
        self.show_source()
        if self.pending_select is not None:
            blob_index, chunk = self.pending_select
            self.pending_select = None
            self.select_chunk(blob_index, chunk)

    def show_source(self) -> None:
        self.filter_text = ""
        self.table.set_rows(self.source)
        self.table.focus()
        self.update_status()
        self.show_detail()

    def update_status(self) -> None:
        src = self.source
        t = self.table
        parts = []
        if src is not None:
            parts.append(f"{src.label}: {len(src):,} chunks")
            if self.filter_text:
                parts.append(f"filter '{self.filter_text}': {len(t.rows):,} rows")
            if t.rows:
                parts.append(f"row {t.cursor + 1:,} of {len(t.rows):,}")
            if len(self.sources) > 1:
                parts.append(f"b: blob {self.source_index + 1}/{len(self.sources)}")
        view = self.view
        if view.index is None and view.is_v6:
            done, total = self.nydus.index_progress.get(id(view), (0, 0))
            pct = f" {100 * done // total}%" if total else ""
            parts.append(f"files: indexing{pct}…")
        if self.busy:
            parts.append(self.busy)
        self.query_one("#chunks-status", Static).update(" · ".join(parts) or "-")

    def on_chunk_table_highlighted(self, message: ChunkTable.Highlighted) -> None:
        # While keys repeat, only the table redraws; the panes follow once the cursor rests.
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._settle)

    def _settle(self) -> None:
        self._detail_timer = None
        self.show_detail()
        self.update_status()

    def show_detail(self) -> None:
        src, row = self.source, self.table.row
        detail = self.query_one("#chunk-detail", KeyValue)
        if src is None or row is None:
            detail.show([])
            self.query_one("#chunk-data", ContentView).show()
            self.query_one("#chunk-check", Static).update("")
            return
        detail.show(src.detail(row), "Chunk")
        if self.checked != (src, row):  # keep a check result while its row stays under the cursor
            self.checked = None
            self.query_one("#chunk-check", Static).update("v: read, decompress and check this chunk")
            self.query_one("#chunk-data", ContentView).show()

    def index_ready(self) -> None:
        self.table.refresh()
        self.show_detail()
        self.update_status()

    def resumed(self) -> None:
        self.table.refresh()
        self.update_status()

    # -- navigation
    def action_next_blob(self) -> None:
        if len(self.sources) > 1:
            self.source_index = (self.source_index + 1) % len(self.sources)
            self.show_source()

    def action_jump(self) -> None:
        self.prompt.ask("jump", JUMP_HELP)

    def answer_jump(self, value: str) -> None:
        src = self.source
        if src is None:
            return
        try:
            kind, number = parse_jump(value)
        except ValueError:
            self.notify(f"cannot jump to {value!r}: {JUMP_HELP}", severity="error")
            return
        self.jump(kind, number)

    def jump(self, kind: str, number: int) -> None:
        """Move to chunk ``number`` (kind "index") or to the chunk holding an offset."""
        src = self.source
        if src is None:
            return
        row = number if kind == "index" else src.bisect(number, compressed=kind == "compressed")
        if not 0 <= row < len(src):
            self.notify(f"no chunk {number} (there are {len(src):,})", severity="error")
            return
        rows = self.table.rows
        if isinstance(rows, range):
            pos = row
        else:
            pos = next((k for k, r in enumerate(rows) if r == row), None)
            if pos is None:
                self.notify("that chunk is hidden by the filter (x clears it)", severity="warning")
                return
        self.table.go_to(pos)
        self.table.focus()

    def select_chunk(self, blob_index: int | None, chunk: int) -> None:
        """Show chunk ``chunk`` of blob ``blob_index`` (from the verify and files screens)."""
        if not self.sources and self.busy:
            self.pending_select = (blob_index, chunk)  # still loading: select it once loaded
            return
        for k, src in enumerate(self.sources):
            if src.blob_index == blob_index or blob_index is None:
                if k != self.source_index:
                    self.source_index = k
                    self.show_source()
                elif self.filter_text:
                    self.show_source()
                self.jump("index", chunk)
                return

    # -- filter
    def action_filter(self) -> None:
        self.prompt.ask("filter", FILTER_HELP, self.filter_text)

    def action_clear_filter(self) -> None:
        if self.filter_text:
            self.show_source()

    def answer_filter(self, value: str) -> None:
        src = self.source
        value = value.strip()
        if src is None:
            return
        if not value:
            self.show_source()
            return
        try:
            src.matcher(value)
        except ValueError as exc:
            self.notify(f"{exc}. {FILTER_HELP}", severity="error")
            return
        self.busy = f"filtering '{value}'…"
        self.update_status()
        self._filter(src, value)

    @work(thread=True, exclusive=True, group="chunks-filter")
    def _filter(self, src: ChunkSource, expr: str) -> None:
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            self.busy = f"filtering '{expr}' {100 * done // total}%…"

        rows = src.filter(expr, progress=progress, cancel=lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_filter, src, expr, rows)

    def _show_filter(self, src: ChunkSource, expr: str, rows: array) -> None:
        self.busy = ""
        if src is not self.source:
            return
        self.filter_text = expr
        self.table.set_rows(src, rows)
        self.update_status()
        self.show_detail()
        if not rows:
            self.notify(f"no chunk matches '{expr}'", severity="warning")

    # -- search
    def search(self, text: str, again: bool) -> None:
        src = self.source
        if src is None:
            return
        start = self.table.cursor + 1 if again else 0
        self.busy = f"searching '{text}'…"
        self.update_status()
        self._search(src, text, start)

    @work(thread=True, exclusive=True, group="chunks-search")
    def _search(self, src: ChunkSource, text: str, start: int) -> None:
        pos = src.search(text, self.table.rows, start)
        self.app.call_from_thread(self._show_search, src, text, pos)

    def _show_search(self, src: ChunkSource, text: str, pos: int | None) -> None:
        self.busy = ""
        if src is not self.source:
            return
        if pos is None:
            self.notify(f"no chunk matches {text!r}", severity="warning")
        else:
            self.table.go_to(pos)
            self.table.focus()
        self.update_status()

    # -- per-chunk verify
    def action_verify_chunk(self) -> None:
        src, row = self.source, self.table.row
        if src is not None and row is not None:
            self.query_one("#chunk-check", Static).update(Text("checking…", style="italic"))
            self._verify(src, row)

    @work(thread=True, exclusive=True, group="chunks-verify")
    def _verify(self, src: ChunkSource, row: int) -> None:
        try:
            data, findings = src.check(row)
        except NydusInspectError as exc:
            data, findings = None, [str(exc)]
        self.app.call_from_thread(self._show_verify, src, row, data, findings)

    def _show_verify(self, src: ChunkSource, row: int, data: bytes | None, findings: list) -> None:
        if src is not self.source or row != self.table.row:
            return
        self.checked = (src, row)
        if findings:
            text = Text("MISMATCH\n", style="bold red")
            for f in findings:
                text.append(f"{f}\n")
        else:
            rec = src.record(row)
            text = Text(
                f"match: read {rec.compressed_size:,} bytes, decompressed to {len(data or b''):,}, "
                f"{src.verifier.digester.value} digest as recorded",
                style="bold green",
            )
        self.query_one("#chunk-check", Static).update(text)
        if data is not None:
            kind, body = content_preview(data, 0, 1024)
            self.query_one("#chunk-data", ContentView).show(f"decompressed bytes ({kind}):\n", body)
