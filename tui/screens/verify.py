"""Verify: the full verification (ToC digests, chunk digests, blob.meta, bootstrap, and the round trip
against a source tar) as a worker with a progress bar; failures listed with where they are."""

from __future__ import annotations

import time

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static
from textual.worker import get_current_worker

from nydus_inspect.verify import STAGES, Finding, Report

from ..data import LayerView
from ..jobs import JobCancelled, JobFailed, run_job, verify_job
from ..widgets import KeyValue
from .base import NydusScreen

#: Below this width the finding detail goes under the table instead of beside it.
NARROW_BELOW = 120


class VerifyScreen(NydusScreen):
    NAME = "Verify"
    SEARCH_HINT = "search findings (check, where, message)"
    BINDINGS = [
        Binding("r", "run", "Run"),
        Binding("c", "cancel", "Cancel"),
        Binding("enter", "go", "Go to", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reports: dict[int, Report] = {}
        self.findings: list[Finding] = []
        self.stage = ""
        self.done = 0
        self.total = 0
        self.running = False
        self.started = 0.0
        self.elapsed = 0.0

    def compose_body(self) -> ComposeResult:
        with Vertical(id="verify-body"):
            yield Static(id="verify-status", classes="about")
            yield ProgressBar(id="verify-progress", show_eta=False)
            with Horizontal(id="verify-split"):
                yield DataTable(id="findings", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="finding-side", classes="pane"):
                    yield KeyValue(id="finding-detail")

    def on_mount(self) -> None:
        # The message before where it is: a long "where" would push the message off the screen.
        self.query_one("#findings", DataTable).add_columns("check", "message", "where")
        self.set_interval(0.1, self._poll)
        super().on_mount()

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        # Narrow: the detail pane goes below the findings, which keep the whole width for their messages.
        self.set_class(event.size.width < NARROW_BELOW, "-narrow")

    def load(self, view: LayerView) -> None:
        report = self.reports.get(id(view))
        if report is not None:
            self.show_report(report)
            return
        self.findings = []
        self.query_one("#findings", DataTable).clear()
        self.query_one("#finding-detail", KeyValue).show([])
        # No bar until a run starts: an empty bar would be indeterminate, animating as if work were going on.
        self.query_one(ProgressBar).display = False
        src = (
            f"; round trip against {view.source}"
            if view.source
            else " (give --source LAYER.tar for the round trip)"
        )
        self.query_one("#verify-status", Static).update(
            f"r: run the full verification of {view.name}: ToC digests, chunk digests, blob.meta, bootstrap{src}"
        )

    # -- running
    def action_run(self) -> None:
        if self.running:
            self.notify("verification is already running (c cancels)")
            return
        view = self.view
        self.running = True
        self.stage, self.done, self.total = "starting", 0, 0
        self.started = time.monotonic()
        bar = self.query_one(ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.findings = []
        self.query_one("#findings", DataTable).clear()
        self.query_one("#finding-detail", KeyValue).show([])
        self._run(view)

    def action_cancel(self) -> None:
        if self.running:
            self.workers.cancel_group(self, "verify")
            self.query_one("#verify-status", Static).update("cancelling…")

    @work(thread=True, exclusive=True, group="verify")
    def _run(self, view: LayerView) -> None:
        worker = get_current_worker()
        ly = view.layer

        def progress(stage: str, done: int, total: int) -> None:
            self.stage, self.done, self.total = stage, done, total

        # In a child process of its own: it reads everything, and must neither share the GIL with the event
        # loop nor share caches with the browsing.
        try:
            report = run_job(
                verify_job,
                (ly.path, ly.blob_dir, ly.extra_blobs, view.source),
                on_progress=progress,
                cancelled=lambda: worker.is_cancelled,
                in_process=self.nydus.jobs_in_process,
            )
        except JobCancelled:
            report = Report(ly.path, cancelled=True)
        except JobFailed as exc:
            report = Report(ly.path, [Finding("job", f"verification did not finish: {exc}", file=ly.path)])
        self.app.call_from_thread(self._finished, view, report)

    def _poll(self) -> None:
        if not self.running:
            return
        bar = self.query_one(ProgressBar)
        k = STAGES.index(self.stage) if self.stage in STAGES else 0
        bar.update(total=self.total or None, progress=self.done)
        self.query_one("#verify-status", Static).update(
            f"verifying {self.view.name}: stage {k + 1}/{len(STAGES)} {self.stage} — {self.done:,} of {self.total:,}"
        )

    def _finished(self, view: LayerView, report: Report) -> None:
        self.running = False
        self.elapsed = time.monotonic() - self.started
        self.reports[id(view)] = report
        if view is self.view:
            self.show_report(report)
        self.notify(
            f"{view.name}: {report.summary()} ({self.elapsed:.1f} s)",
            severity="information" if report.ok else "error",
        )

    def show_report(self, report: Report) -> None:
        bar = self.query_one(ProgressBar)
        bar.update(total=1, progress=1)
        bar.display = True
        status = Text(report.summary(), style="bold green" if report.ok else "bold red")
        for note in report.notes:
            status.append(f"\nnote: {note}", style="dim")
        if report.suppressed:
            status.append(
                "\nnot listed (over the limit): "
                + ", ".join(f"{n} {k}" for k, n in report.suppressed.items())
            )
        self.query_one("#verify-status", Static).update(status)
        table = self.query_one("#findings", DataTable)
        table.clear()
        self.findings = list(report.findings)
        for f in self.findings:
            table.add_row(Text(f.check, style="red"), f.message, f.where)
        if self.findings:
            table.focus()
            self.show_finding(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "findings":
            self.show_finding(event.cursor_row)

    def show_finding(self, i: int) -> None:
        if not 0 <= i < len(self.findings):
            return
        f = self.findings[i]
        pairs = [
            (k, str(v) if not isinstance(v, list) else ", ".join(v))
            for k, v in f.to_json().items()
            if k not in ("paths",)
        ]
        for k, p in enumerate(f.paths):
            pairs.append(("files" if k == 0 else "", p))
        go = "Enter: show it" if (f.chunk is not None or f.path or f.entry) else ""
        self.query_one("#finding-detail", KeyValue).show(
            pairs, f"Finding {i + 1} of {len(self.findings)}  {go}"
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "findings":
            self.go(event.cursor_row)

    def action_go(self) -> None:
        table = self.query_one("#findings", DataTable)
        if table.row_count:
            self.go(table.cursor_row)

    def go(self, i: int) -> None:
        """Show where finding ``i`` is: its chunk, its file or its ToC entry."""
        if not 0 <= i < len(self.findings):
            return
        f = self.findings[i]
        app = self.nydus
        if f.chunk is not None:
            app.action_show("chunks")
            app.call_after_refresh(lambda: app.screen.select_chunk(f.blob_index, f.chunk))
        elif f.path:
            app.action_show("files")
            app.call_after_refresh(lambda: app.screen.reveal(f.path))
        elif f.entry:
            app.action_show("toc")
            app.call_after_refresh(lambda: app.screen.search(f.entry, again=False))

    def search(self, text: str, again: bool) -> None:
        table = self.query_one("#findings", DataTable)
        n = len(self.findings)
        start = table.cursor_row + 1 if again else 0
        low = text.lower()
        for k in range(n):
            r = (start + k) % n
            if low in str(self.findings[r]).lower():
                table.move_cursor(row=r)
                table.focus()
                return
        self.notify(f"no finding matches {text!r}", severity="warning")
