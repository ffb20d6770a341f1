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

from .data import ChunkSource, Pairs


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

    COLUMNS = (
        ("INDEX", 8, True),
        ("C.OFFSET", 13, True),
        ("C.SIZE", 8, True),
        ("U.OFFSET", 14, True),
        ("U.SIZE", 8, True),
        ("COMP", 4, False),
        ("DIGEST", 17, False),
        ("FILES", 36, False),
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
        self._width = sum(w for _, w, _ in self.COLUMNS) + len(self.COLUMNS) - 1
        self.rendered_rows = 0  # rows decoded by render_line since the last set_rows (for the bench)
        self._styles: dict | None = None

    # -- data
    def set_rows(self, source: ChunkSource | None, rows: Sequence[int] | None = None) -> None:
        self.source = source
        self.rows = rows if rows is not None else range(len(source) if source is not None else 0)
        self.virtual_size = Size(self._width, len(self.rows) + 1)
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

    @classmethod
    def format_cells(cls, cells: Sequence[str]) -> str:
        out = []
        for (_, width, right), cell in zip(cls.COLUMNS, cells):
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
            text = self.format_cells([c for c, _, _ in self.COLUMNS])
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
        top = int(self.scroll_y)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + self.visible_lines:
            self.scroll_to(y=new - self.visible_lines + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self, new, self.row))

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
