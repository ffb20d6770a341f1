"""Overview: what was opened — kind, digest, sizes, fs version, compressor, digester, chunk size, counts — and
the blob table."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Label

from ..data import LayerView
from ..widgets import KeyValue
from .base import NydusScreen

BLOB_COLUMNS = (
    "#",
    "blob id",
    "chunks",
    "compressor",
    "digester",
    "compressed",
    "uncompressed",
    "features",
    "data",
)


class OverviewScreen(NydusScreen):
    NAME = "Overview"
    SEARCH_HINT = "search the blob table (blob id) and the opened layers (name)"
    BINDINGS = [Binding("enter", "open_layer", "Open layer", show=False)]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="overview-body"):
            with Horizontal(id="overview-facts"):
                yield KeyValue(id="summary", classes="pane")
                yield KeyValue(id="bootstrap", classes="pane")
            yield Label("Blob table", classes="section-title")
            yield DataTable(id="blobs", cursor_type="row", zebra_stripes=True)
            yield Label(
                Text("Opened layers ([ and ] switch, Enter shows one)"),
                classes="section-title",
                id="layers-title",
            )
            yield DataTable(id="layers", cursor_type="row")

    def on_mount(self) -> None:
        blobs = self.query_one("#blobs", DataTable)
        blobs.add_columns(*BLOB_COLUMNS)
        layers = self.query_one("#layers", DataTable)
        layers.add_columns("#", "layer", "kind", "size")
        super().on_mount()

    def load(self, view: LayerView) -> None:
        summary = view.summary()
        summary.insert(3, ("sha256", view.digest_if_known() or "computing…"))
        self.query_one("#summary", KeyValue).show(summary, "File")
        self.query_one("#bootstrap", KeyValue).show([("bootstrap", "loading…")], "Bootstrap")
        self.query_one("#blobs", DataTable).clear()
        layers = self.query_one("#layers", DataTable)
        layers.clear()
        for i, v in enumerate(self.nydus.views):
            mark = "▶ " if i == self.nydus.current else ""
            layers.add_row(f"{mark}{i + 1}", v.name, v.layer.kind, f"{v.layer.size:,}", key=str(i))
        multi = len(self.nydus.views) > 1
        self.query_one("#layers-title").display = multi
        layers.display = multi
        # The file's digest and the bootstrap's decoding take a core each: started once the first frame is
        # painted, they do not slow it down.
        self.call_after_refresh(self._digest, view)
        self.call_after_refresh(self._bootstrap, view)

    @work(thread=True, exclusive=True, group="overview-digest")
    def _digest(self, view: LayerView) -> None:
        digest = view.layer.digest
        self.app.call_from_thread(self._show_digest, view, digest)

    def _show_digest(self, view: LayerView, digest: str) -> None:
        if view is not self.view:
            return
        pane = self.query_one("#summary", KeyValue)
        pane.show([(k, digest if k == "sha256" else v) for k, v in pane.pairs], "File")

    @work(thread=True, exclusive=True, group="overview-bootstrap")
    def _bootstrap(self, view: LayerView) -> None:
        facts = view.bootstrap_summary()
        rows = view.blob_rows()
        self.app.call_from_thread(self._show_bootstrap, view, facts, rows)

    def _show_bootstrap(self, view: LayerView, facts, rows) -> None:
        if view is not self.view:
            return
        self.query_one("#bootstrap", KeyValue).show(facts, "Bootstrap")
        table = self.query_one("#blobs", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*row)
        if not rows:
            table.add_row(
                "-",
                "(no blob table: a plain EROFS image holds its file data)"
                if view.is_erofs
                else "(no blob table: " + ("a data blob" if not view.is_v6 else "empty") + ")",
                *[""] * (len(BLOB_COLUMNS) - 2),
            )

    def action_open_layer(self) -> None:
        table = self.query_one("#layers", DataTable)
        if table.has_focus and table.row_count:
            self.nydus.select_layer(table.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "layers":
            self.nydus.select_layer(event.cursor_row)

    def search(self, text: str, again: bool) -> None:
        low = text.lower()
        for table_id, col in (("#blobs", 1), ("#layers", 1)):
            table = self.query_one(table_id, DataTable)
            if not table.display or not table.row_count:
                continue
            start = table.cursor_row + 1 if again and table.has_focus else 0
            for k in range(table.row_count):
                r = (start + k) % table.row_count
                if low in str(table.get_row_at(r)[col]).lower():
                    table.focus()
                    table.move_cursor(row=r)
                    return
        self.notify(f"no blob or layer matches {text!r}", severity="warning")
