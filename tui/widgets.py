"""Widgets of the nydus-inspect app: a virtual chunk table, key/value panes and the prompt bar."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from .data import ChunkSource, HexDump, Pairs


class KeyValue(Static):
    """A two-column pane of (field, value) pairs; ``pairs`` keeps what is shown, for tests and copy."""

    def __init__(self, pairs: Pairs | None = None, **kw) -> None:
        super().__init__(**kw)
        self.pairs: Pairs = []
        if pairs:
            self.show(pairs)

    def show(self, pairs: Pairs, title: str | None = None) -> None:
        self.pairs = list(pairs)
        self.title = title or ""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True, max_width=24, overflow="ellipsis")
        grid.add_column(overflow="fold")
        for k, v in self.pairs:
            if k.startswith("-- "):
                grid.add_row(Text(k[3:], style="bold underline"), Text(v, style="underline"))
            else:
                grid.add_row(k, Text(v))
        self.update(Group(Text(title, style="bold reverse"), grid) if title else grid)

    def value(self, key: str) -> str | None:
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    @property
    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.pairs)


class ChunkTable(ScrollView, can_focus=True):
    """The chunk table of one blob, virtualised: only the rows on screen are ever decoded.

    ``rows`` is any sequence of record positions (a range for the whole table, an array after a
    filter); scrolling a million rows costs what one screenful costs.
    """

    #: (title, right-aligned, widest, narrowest): the numbers are as wide as the source's largest value
    #: needs; the digest gives way down to its narrowest, then FILES takes what is left of the width.
    COLUMNS = (
        ("INDEX", True, 0, 0),
        ("C.OFFSET", True, 0, 0),
        ("C.SIZE", True, 0, 0),
        ("U.OFFSET", True, 0, 0),
        ("U.SIZE", True, 0, 0),
        ("COMP", False, 4, 4),
        ("DIGEST", False, 17, 9),
        ("FILES", False, 0, 16),
    )
    COMPONENT_CLASSES = {"chunk-table--header", "chunk-table--cursor", "chunk-table--odd"}
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class Highlighted(Message):
        """The cursor moved to ``position`` in the rows (record ``row`` of the source)."""

        def __init__(self, table: ChunkTable, position: int, row: int | None) -> None:
            super().__init__()
            self.table = table
            self.position = position
            self.row = row

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.source: ChunkSource | None = None
        self.rows: Sequence[int] = range(0)
        self._fitted_to: tuple | None = None
        self.widths: list[int] = []
        self._width = 0
        self.fit_columns(80)
        self.rendered_rows = 0  # rows decoded by render_line since the last set_rows (for the bench)
        self._styles: dict | None = None

    # -- data
    def set_rows(self, source: ChunkSource | None, rows: Sequence[int] | None = None) -> None:
        self.source = source
        self.rows = rows if rows is not None else range(len(source) if source is not None else 0)
        self._fitted_to = None
        self.fit_columns(self._fit_width())
        self.rendered_rows = 0
        self.scroll_to(0, 0, animate=False)
        self.cursor = 0

    @property
    def row(self) -> int | None:
        """The record position under the cursor."""
        if not self.rows or not 0 <= self.cursor < len(self.rows):
            return None
        return self.rows[self.cursor]

    def line_cells(self, position: int) -> list[str]:
        assert self.source is not None
        return self.source.cells(self.rows[position])

    def fit_columns(self, width: int) -> None:
        """Size the columns for ``width`` cells: every number whole, the FILES column as wide as it can be."""
        bounds = self.source.column_bounds() if self.source is not None else (0, 0, 0, 0, 0)
        key = (width, bounds)
        if key == self._fitted_to:
            return
        self._fitted_to = key
        widths = [
            max(len(title), len(str(bounds[0]) if k == 0 else f"{bounds[k]:,}"))
            for k, (title, _, _, _) in enumerate(self.COLUMNS[:5])
        ]
        (_, _, comp, _), (_, _, digest, digest_min), (_, _, _, files_min) = self.COLUMNS[5:]
        spare = width - sum(widths) - comp - (len(self.COLUMNS) - 1)
        digest = max(digest_min, min(digest, spare - files_min))
        files = max(files_min, spare - digest)
        self.widths = [*widths, comp, digest, files]
        self._width = sum(self.widths) + len(self.widths) - 1
        self.virtual_size = Size(self._width, len(self.rows) + 1)
        self.refresh()

    def _fit_width(self) -> int:
        """The width the columns may take: the table's, less the vertical scroll bar when the rows need
        one (fitted to the width left inside a scroll bar, the table would need a horizontal one too)."""
        width = self.size.width or 80
        if len(self.rows) + 1 > self.size.height:
            width -= self.styles.scrollbar_size_vertical
        return width

    def on_resize(self, event: events.Resize) -> None:
        self.fit_columns(self._fit_width())
        # The screen around the table may settle after the cursor moved (a status line that wraps): the
        # row under the cursor stays in view.
        self._keep_cursor_visible()

    def format_cells(self, cells: Sequence[str]) -> str:
        out = []
        for (_, right, _, _), width, cell in zip(self.COLUMNS, self.widths, cells):
            if len(cell) > width:
                cell = cell[: width - 1] + "…"
            out.append(cell.rjust(width) if right else cell.ljust(width))
        return " ".join(out)

    @property
    def visible_lines(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    # -- rendering
    def notify_style_update(self) -> None:
        self._styles = None
        super().notify_style_update()

    def _line_styles(self) -> dict:
        if self._styles is None:
            base = self.rich_style
            self._styles = {"base": base}
            for part in ("header", "cursor", "odd"):
                self._styles[part] = base + self.get_component_rich_style(f"chunk-table--{part}")
        return self._styles

    def on_focus(self) -> None:
        self._styles = None
        self.refresh()

    def on_blur(self) -> None:
        self._styles = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        styles = self._line_styles()
        if y == 0:
            text = self.format_cells([c for c, _, _, _ in self.COLUMNS])
            style = styles["header"]
        else:
            pos = scroll_y + y - 1
            if self.source is None or pos >= len(self.rows):
                return Strip.blank(width, styles["base"])
            text = self.format_cells(self.line_cells(pos))
            self.rendered_rows += 1
            if pos == self.cursor:
                style = styles["cursor"]
            elif pos % 2:
                style = styles["odd"]
            else:
                style = styles["base"]
        text = text.ljust(max(self._width, width))
        strip = Strip([Segment(text, style)], len(text))
        return strip.crop(scroll_x, scroll_x + width)

    def text_lines(self) -> list[str]:
        """The lines on screen as plain text (what a user reads; used by tests)."""
        height = self.scrollable_content_region.height
        return [self.render_line(y).text.rstrip() for y in range(height)]

    # -- cursor
    def watch_cursor(self, old: int, new: int) -> None:
        n = len(self.rows)
        if n and not 0 <= new < n:
            self.cursor = max(0, min(new, n - 1))
            return
        self._keep_cursor_visible()
        self.refresh()
        self.post_message(self.Highlighted(self, new, self.row))

    def _keep_cursor_visible(self) -> None:
        top, new = int(self.scroll_y), self.cursor
        # force: right after set_rows the scroll bars are not laid out yet, and a plain scroll_to would be
        # ignored as not allowed (a finding's chunk selected as the screen opens stayed off screen).
        if new < top:
            self.scroll_to(y=new, animate=False, force=True)
        elif new >= top + self.visible_lines:
            self.scroll_to(y=new - self.visible_lines + 1, animate=False, force=True)

    def go_to(self, position: int) -> None:
        self.cursor = max(0, min(position, len(self.rows) - 1))

    def action_move(self, delta: int) -> None:
        self.go_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        step = self.visible_lines
        self.go_to(self.cursor + direction * step)

    def action_edge(self, end: int) -> None:
        self.go_to(len(self.rows) - 1 if end else 0)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        pos = int(self.scroll_y) + offset.y - 1
        if pos < len(self.rows):
            self.go_to(pos)


class ContentView(Static):
    """Text and hex dumps; a hex dump is laid out for the width the view has (and again when that
    changes), so that its lines never wrap in a narrow pane."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.parts: tuple = ()

    def show(self, *parts: str | Text | HexDump) -> None:
        self.parts = parts
        self._lay_out()

    def _lay_out(self) -> None:
        width = self.content_region.width or self.app.size.width
        text = Text()
        for part in self.parts:
            text.append(part.text(width) if isinstance(part, HexDump) else part)
        self.update(text)

    def on_resize(self, event: events.Resize) -> None:
        if self.parts:
            self._lay_out()


class PromptBar(Input):
    """A one-line prompt at the bottom of a screen (search, jump, filter); hidden until asked for."""

    BINDINGS = [Binding("escape", "dismiss", "Close", show=False)]

    class Answered(Message):
        def __init__(self, purpose: str, value: str) -> None:
            super().__init__()
            self.purpose = purpose
            self.value = value

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.purpose = ""
        self._return_focus = None

    def ask(self, purpose: str, placeholder: str, value: str = "") -> None:
        self.purpose = purpose
        self.placeholder = placeholder
        self.value = value
        self._return_focus = self.screen.focused
        self.add_class("-shown")
        self.focus()

    def action_dismiss(self) -> None:
        self.remove_class("-shown")
        if self._return_focus is not None and self._return_focus.is_attached:
            self._return_focus.focus()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        purpose, value = self.purpose, event.value
        self.action_dismiss()
        self.post_message(self.Answered(purpose, value))
