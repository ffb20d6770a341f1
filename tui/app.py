"""NydusApp: the Textual app of ``nydus-inspect tui`` — six screens over one or more opened layers."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import get_current_worker

from nydus_inspect import Layer, NydusInspectError

from .data import LayerView
from .jobs import JobCancelled, JobFailed, index_job, run_job
from .jobs import prepare as prepare_jobs
from .screens import SCREENS, HelpScreen


class NydusApp(App[None]):
    """Interactive debugging of nydus layers: overview, ToC, chunks, files and verification."""

    CSS_PATH = "app.tcss"
    TITLE = "nydus-inspect"
    MODES = {name: cls for name, (cls, _, _) in SCREENS.items()}
    BINDINGS = [
        Binding("1", "show('overview')", "Overview"),
        Binding("2", "show('toc')", "ToC"),
        Binding("3", "show('chunks')", "Chunks"),
        Binding("4", "show('files')", "Files"),
        Binding("5", "show('verify')", "Verify"),
        # Not in the footer, which is full at 80 columns: the help and the command palette name it.
        Binding("6", "show('analysis')", "Analysis", show=False),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("right_square_bracket", "layer(1)", "Next layer", show=False),
        Binding("left_square_bracket", "layer(-1)", "Previous layer", show=False),
    ]

    class IndexReady(Message):
        """The full walk of ``view`` finished: chunk owners, hardlinks and path search are available."""

        def __init__(self, view: LayerView) -> None:
            super().__init__()
            self.view = view

    def __init__(
        self,
        layers: Iterable[Layer | LayerView],
        source: str | None = None,
        start: str = "overview",
        jobs_in_process: bool = True,
        freeze_heap: bool = False,
    ) -> None:
        """``jobs_in_process``: run the full walk and the verification in a child process (the default; a
        thread would share the GIL with the event loop and make the app stall on big layers).

        ``freeze_heap`` (the program's choice, made by ``nydus-inspect tui``; an app made from Python leaves
        the collector alone): once a layer's index has arrived, its objects (several per inode, kept to the
        end) are moved out of the cyclic collector's reach, whose full passes over them would otherwise
        stall frames while keys are pressed."""
        super().__init__()
        self.freeze_heap = freeze_heap
        self.jobs_in_process = jobs_in_process and prepare_jobs()
        self.views = [ly if isinstance(ly, LayerView) else LayerView(ly, source) for ly in layers]
        if not self.views:
            raise ValueError("NydusApp needs at least one layer")
        self.source = source
        self.current = 0
        self.start_mode = start
        self.index_progress: dict[int, tuple[int, int]] = {}

    @property
    def view(self) -> LayerView:
        return self.views[self.current]

    def on_mount(self) -> None:
        self.switch_mode(self.start_mode)

    # -- actions
    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_layer(self, delta: int) -> None:
        self.select_layer((self.current + delta) % len(self.views))

    def select_layer(self, index: int) -> None:
        if index == self.current:
            return
        self.current = index
        self.notify(f"layer {index + 1}/{len(self.views)}: {self.view.name}", timeout=2)
        screen = self.screen
        if hasattr(screen, "refresh_view"):
            screen.refresh_view()

    # -- the full walk, once per layer, in the background
    def ensure_index(self, view: LayerView | None = None) -> None:
        view = view or self.view
        if view.index is not None or view.index_error or not view.is_v6 or id(view) in self.index_progress:
            return
        self.index_progress[id(view)] = (0, 0)
        self._build_index(view)

    @work(thread=True, group="index")
    def _build_index(self, view: LayerView) -> None:
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            self.index_progress[id(view)] = (done, total)

        ly = view.layer
        try:
            view.index = run_job(
                index_job,
                (ly.path, ly.blob_dir, ly.extra_blobs),
                on_progress=progress,
                cancelled=lambda: worker.is_cancelled,
                in_process=self.jobs_in_process,
            )
        except (JobCancelled, JobFailed, NydusInspectError) as exc:
            view.index_error = str(exc) or type(exc).__name__
        if not worker.is_cancelled:
            self.call_from_thread(self.post_message, self.IndexReady(view))

    def on_nydus_app_index_ready(self, message: IndexReady) -> None:
        self.index_progress.pop(id(message.view), None)
        if self.freeze_heap:
            import gc

            gc.freeze()
        screen = self.screen
        if hasattr(screen, "index_ready") and message.view is self.view:
            screen.index_ready()

    # -- command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for mode, (_, title, help_text) in SCREENS.items():
            yield SystemCommand(f"Screen: {title}", help_text, partial(self.action_show, mode))
        yield SystemCommand(
            "Verify: run the full verification",
            "ToC, chunks, blob.meta, bootstrap (and round trip)",
            self._run_verify,
        )
        if len(self.views) > 1:
            for i, v in enumerate(self.views):
                yield SystemCommand(
                    f"Layer: {v.name}", f"show layer {i + 1} ({v.layer.kind})", partial(self.select_layer, i)
                )
        yield SystemCommand("Help", "Keys and syntax of every screen", self.action_help)
        yield from super().get_system_commands(screen)

    def screen_text(self) -> str:
        """The current screen as plain text, as a terminal shows it (tests, bench, bug reports)."""
        import io

        from rich.console import Console

        width, height = self.size
        console = Console(
            width=width,
            height=height,
            file=io.StringIO(),
            force_terminal=True,
            record=True,
            color_system=None,
            legacy_windows=False,
            safe_box=False,
        )
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return console.export_text(styles=False)

    def _run_verify(self) -> None:
        self.action_show("verify")
        self.call_after_refresh(
            lambda: self.screen.action_run() if hasattr(self.screen, "action_run") else None
        )


def run(layers: list[Layer], source: str | None = None) -> None:
    NydusApp(layers, source, freeze_heap=True).run()
