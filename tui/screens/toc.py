"""ToC: the blob's table of contents, a per-entry sha256 check, and a preview of the highlighted entry."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from ..data import EntryCheck, LayerView, Preview, TocRow
from ..widgets import ContentView, KeyValue
from .base import NydusScreen

COLUMNS = ("entry", "compressor", "offset", "stored", "size", "sha256", "check")


class TocScreen(NydusScreen):
    NAME = "ToC"
    SEARCH_HINT = "search entry names"
    BINDINGS = [
        Binding("v", "verify_entry", "Verify entry"),
        Binding("a", "verify_all", "Verify all"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[TocRow] = []

    def compose_body(self) -> ComposeResult:
        with Vertical(id="toc-body"):
            yield DataTable(id="toc", cursor_type="row", zebra_stripes=True)
            yield Static(id="toc-about", classes="about")
            yield Static(id="toc-check", classes="about")
            with VerticalScroll(id="toc-preview", classes="pane"):
                yield KeyValue(id="toc-fields")
                yield ContentView(id="toc-hex", classes="hex")

    def on_mount(self) -> None:
        table = self.query_one("#toc", DataTable)
        for col in COLUMNS:
            table.add_column(col, key=col)
        super().on_mount()

    def load(self, view: LayerView) -> None:
        table = self.query_one("#toc", DataTable)
        table.clear()
        self.rows, about = view.toc_rows()
        for row in self.rows:
            check = view.toc_checks.get(row.name)
            table.add_row(*row.cells(), self._check_cell(check), key=row.name)
        if not self.rows:
            about = (
                f"{view.name} is a plain EROFS image: it has no ToC and no tar sections"
                if view.is_erofs
                else f"{view.name} is a {view.layer.kind}: no ToC and no tar sections. {about}"
            )
        self.query_one("#toc-about", Static).update(about)
        self.query_one("#toc-check", Static).update("v: check the highlighted entry's sha256, a: check all")
        if self.rows:
            table.focus()
            self._preview(view, self.rows[0].name)
        else:
            self.query_one("#toc-fields", KeyValue).show([])
            self.query_one("#toc-hex", ContentView).show()

    @staticmethod
    def _check_cell(check: EntryCheck | None) -> Text:
        if check is None:
            return Text("")
        style = {True: "bold green", False: "bold red", None: "dim"}[check.ok]
        return Text(check.label, style=style)

    @property
    def current(self) -> str | None:
        table = self.query_one("#toc", DataTable)
        if not self.rows or table.cursor_row < 0:
            return None
        return self.rows[min(table.cursor_row, len(self.rows) - 1)].name

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self._preview(self.view, event.row_key.value)

    @work(thread=True, exclusive=True, group="toc-preview")
    def _preview(self, view: LayerView, name: str) -> None:
        preview = view.entry_preview(name)
        self.app.call_from_thread(self._show_preview, view, name, preview)

    def _show_preview(self, view: LayerView, name: str, preview: Preview) -> None:
        if view is not self.view or name != self.current:
            return
        self.query_one("#toc-fields", KeyValue).show(preview.fields, preview.title)
        note = f"({preview.note})\n" if preview.note else ""
        self.query_one("#toc-hex", ContentView).show(note, preview.body)

    # -- verification of entries
    def action_verify_entry(self) -> None:
        name = self.current
        if name is not None:
            self._verify(self.view, [name])

    def action_verify_all(self) -> None:
        if self.rows:
            self._verify(self.view, [r.name for r in self.rows])

    @work(thread=True, exclusive=True, group="toc-verify")
    def _verify(self, view: LayerView, names: list[str]) -> None:
        for name in names:
            self.app.call_from_thread(self._show_check, view, name, None)
            res = view.verify_entry(name)
            self.app.call_from_thread(self._show_check, view, name, res)

    def _show_check(self, view: LayerView, name: str, res: EntryCheck | None) -> None:
        if view is not self.view:
            return
        table = self.query_one("#toc", DataTable)
        table.update_cell(name, "check", self._check_cell(res) if res else Text("checking…", style="italic"))
        if res is not None:
            line = f"{name}: {res.message}"
            if res.ok is False:
                line += f"\n  ToC says  {res.recorded}\n  recomputed {res.found}"
            elif res.ok:
                line += f" ({res.found})"
            self.query_one("#toc-check", Static).update(line)

    def search(self, text: str, again: bool) -> None:
        table = self.query_one("#toc", DataTable)
        n = len(self.rows)
        start = table.cursor_row + 1 if again else 0
        for k in range(n):
            r = (start + k) % n
            if text.lower() in self.rows[r].name.lower():
                table.move_cursor(row=r)
                table.focus()
                return
        self.notify(f"no entry matches {text!r}", severity="warning")
