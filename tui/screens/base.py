"""What every screen of the app shares: header, footer, the prompt bar for `/` search, layer refresh."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header

from ..widgets import PromptBar

if TYPE_CHECKING:
    from ..app import NydusApp
    from ..data import LayerView


#: Below this width the footer drops its padding, so that more of the keys fit.
COMPACT_BELOW = 120


class NydusScreen(Screen):
    """A screen showing one aspect of the app's current layer.

    Subclasses compose their body in ``compose_body``, fill it in ``load(view)`` (called when the
    screen first shows and whenever the current layer changes), and answer prompts in
    ``answer_<purpose>(value)``. ``/`` asks for a search, ``n`` repeats it.
    """

    NAME = ""
    SEARCH_HINT = "search"
    BINDINGS = [
        # The app binds these too; bound here first, the footer lists them before the screen's own keys,
        # so that an 80-column terminal still shows how to get help and how to quit.
        Binding("question_mark,f1", "app.help", "Help", key_display="?"),
        Binding("q", "app.quit", "Quit"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "search_next", "Next match", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: LayerView | None = None
        self.last_search = ""

    @property
    def nydus(self) -> NydusApp:
        return self.app  # type: ignore[return-value]

    @property
    def view(self) -> LayerView:
        return self.nydus.view

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_body()
        yield PromptBar(id="prompt")
        yield Footer(compact=self.app.size.width < COMPACT_BELOW)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.refresh_view()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(Footer).compact = event.size.width < COMPACT_BELOW

    def on_screen_resume(self) -> None:
        if self._shown is not self.view:
            self.refresh_view()
        else:
            self.resumed()

    def refresh_view(self) -> None:
        view = self.view
        self._shown = view
        n = len(self.nydus.views)
        where = f" [{self.nydus.current + 1}/{n}]" if n > 1 else ""
        self.sub_title = f"{self.NAME} · {view.name}{where}"
        self.load(view)

    def load(self, view: LayerView) -> None:
        """Fill the screen for ``view`` (override)."""

    def resumed(self) -> None:
        """The screen shows again for the same layer (override to refresh what may have changed)."""

    def index_ready(self) -> None:
        """The full walk of the current layer finished (override)."""

    # -- prompts
    @property
    def prompt(self) -> PromptBar:
        return self.query_one(PromptBar)

    def action_search(self) -> None:
        self.prompt.ask("search", self.SEARCH_HINT, self.last_search)

    def action_search_next(self) -> None:
        if self.last_search:
            self.search(self.last_search, again=True)
        else:
            self.action_search()

    def on_prompt_bar_answered(self, message: PromptBar.Answered) -> None:
        handler = getattr(self, f"answer_{message.purpose}", None)
        if handler is not None:
            handler(message.value)

    def answer_search(self, value: str) -> None:
        self.last_search = value.strip()
        if self.last_search:
            self.search(self.last_search, again=False)

    def search(self, text: str, again: bool) -> None:
        """Find ``text`` (``again``: the next match after the current one). Override."""
        self.notify("nothing to search on this screen", severity="warning")
