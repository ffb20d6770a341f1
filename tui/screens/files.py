"""Files: the bootstrap tree (loaded a directory page at a time), each node's attributes and chunks, and a
preview of its content read through the chunk reader."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode

from nydus_inspect import Node, NydusInspectError
from nydus_inspect.model import DIR, REG, SYMLINK, fsdecode
from nydus_inspect.paths import resolve_in

from ..data import DIR_PAGE, PREVIEW_BYTES, DirPage, FileRef, LayerView, content_preview
from ..widgets import ContentView, KeyValue
from .base import NydusScreen

CHUNK_COLUMNS = (
    "#",
    "file offset",
    "blob",
    "chunk",
    "c.offset",
    "c.size",
    "u.offset",
    "u.size",
    "comp",
    "digest",
)
#: Chunk rows listed per file in the detail pane.
MAX_CHUNK_ROWS = 500
#: A file's chunks and preview are read once the cursor has rested on it this long: a held arrow key then
#: starts no reads for the files it passes, whose threads would take the GIL from the frames being drawn.
READ_DELAY = 0.05
#: Seconds the cursor must rest on a node before the detail pane follows it: while an arrow key repeats, only
#: the tree redraws (each detail shown costs a decode of the node and a layout pass of the pane).
DETAIL_DELAY = 0.04
#: A directory whose entries take more bytes than this (some 3,000 names) is listed in a thread, a "listing…"
#: node shown meanwhile: decoding a directory of 100k entries takes longer than several frames.
LIST_IN_THREAD = 1 << 16


class FilesScreen(NydusScreen):
    NAME = "Files"
    SEARCH_HINT = "search paths: a substring (case-insensitive), or a path from / (symlinks followed)"
    BINDINGS = [Binding("c", "show_chunk", "Chunk in table")]

    def __init__(self) -> None:
        super().__init__()
        self.loaded: dict[int, int] = {}  # tree node id -> children loaded so far
        self.totals: dict[int, int] = {}
        self.pending_search: str | None = None
        self.current: FileRef | None = None
        self.chunks_shown: list = []
        self._reads = None  # the timer that starts the highlighted file's reads
        self._detail = None  # the timer that shows the highlighted node's detail
        self._highlighted: FileRef | None = None  # the node it will show
        self._listing: dict[int, TreeNode] = {}  # tree node id -> the node whose directory a thread lists

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="files-body"):
            yield Tree("/", id="tree")
            with Vertical(id="files-right"):
                with VerticalScroll(id="file-info", classes="pane"):
                    yield KeyValue(id="file-detail")
                    yield Static(id="file-chunks-title", classes="section-title")
                    yield DataTable(id="file-chunks", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="file-preview-pane", classes="pane"):
                    yield ContentView(id="file-preview", classes="hex")

    def on_mount(self) -> None:
        self.query_one("#file-chunks", DataTable).add_columns(*CHUNK_COLUMNS)
        super().on_mount()

    @property
    def tree(self) -> Tree:
        return self.query_one("#tree", Tree)

    def load(self, view: LayerView) -> None:
        tree = self.tree
        tree.clear()
        self.loaded.clear()
        self.totals.clear()
        self._listing.clear()
        self.current = self._highlighted = None
        if self._detail is not None:  # a node of the tree being replaced
            self._detail.stop()
            self._detail = None
        detail = self.query_one("#file-detail", KeyValue)
        if not view.is_v6:
            tree.root.set_label(f"{view.name}: no RAFS v6 bootstrap")
            tree.root.data = None
            detail.show(
                [
                    (
                        "files",
                        f"{view.name} is a {view.layer.kind} without a RAFS v6 bootstrap: no file tree "
                        "(open the bootstrap, with --blob-dir for its blobs)",
                    )
                ]
            )
            return
        try:
            root = view.root_ref()
        except NydusInspectError as exc:
            tree.root.set_label(f"unreadable root: {exc}")
            return
        tree.root.data = root
        tree.root.set_label("/")
        self._load_children(view, tree.root)
        tree.root.expand()
        tree.focus()
        tree.move_cursor(tree.root)
        self.show_node(root)
        self.nydus.ensure_index(view)

    # -- lazy loading
    def _load_children(self, view: LayerView, node: TreeNode, until: int = 0) -> None:
        """Add the next page of ``node``'s children (and more pages until position ``until`` is loaded)."""
        ref = node.data
        if not isinstance(ref, FileRef) or not ref.is_dir:
            return
        while True:
            have = self.loaded.get(node.id, 0)
            if have and have >= self.totals.get(node.id, 0):
                return
            try:
                page, total = view.children(ref, have, DIR_PAGE)
            except NydusInspectError as exc:
                node.add_leaf(f"unreadable directory: {exc}")
                self.loaded[node.id] = self.totals[node.id] = 0
                return
            for child in list(node.children):
                if isinstance(child.data, DirPage):
                    child.remove()
            for child in page:
                if child.is_dir:
                    node.add(child.label, data=child, allow_expand=True)
                else:
                    node.add_leaf(child.label, data=child)
            have += len(page)
            self.loaded[node.id] = have
            self.totals[node.id] = total
            if have < total:
                node.add_leaf(
                    f"… {total - have:,} more (Enter loads {min(DIR_PAGE, total - have):,})",
                    data=DirPage(ref, have),
                )
            if have >= total or have > until:
                return

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        node, view = event.node, self.view
        if node.id in self.loaded or node.id in self._listing:
            return
        ref = node.data
        if isinstance(ref, FileRef) and ref.is_dir and view.dir_size(ref) is None:
            try:
                big = view.node(ref).size > LIST_IN_THREAD
            except NydusInspectError:
                big = False  # _load_children says what is wrong
            if big:
                # Enter on the placeholder lists the directory at once, as a "more" node loads its page.
                node.add_leaf("listing…", data=DirPage(ref, 0))
                self._listing[node.id] = node
                # Started once the placeholder is drawn: a thread decoding beside that frame takes the GIL from it.
                self.call_after_refresh(self._list, view, ref, node)
                return
        self._load_children(view, node)

    @work(thread=True, group="files-list")
    def _list(self, view: LayerView, ref: FileRef, node: TreeNode) -> None:
        try:
            view.children(ref, 0, 0)  # keeps the listing in the view
        except NydusInspectError:
            pass  # not kept: _load_children lists it again and shows the error
        self.app.call_from_thread(self._listed, view, node)

    def _listed(self, view: LayerView, node: TreeNode) -> None:
        # Not if the tree was loaded afresh meanwhile, nor if the directory was loaded already (by a reveal).
        if self._listing.pop(node.id, None) is node and view is self.view and not self.loaded.get(node.id):
            self._load_children(view, node)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        if isinstance(event.node.data, DirPage) and event.node.parent is not None:
            self._load_children(self.view, event.node.parent)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        ref = event.node.data
        if isinstance(ref, FileRef):
            self._highlighted = ref
            if self._detail is not None:
                self._detail.stop()
            self._detail = self.set_timer(DETAIL_DELAY, self._settle)

    def _settle(self) -> None:
        self._detail = None
        ref, self._highlighted = self._highlighted, None
        if ref is not None:
            self.show_node(ref)

    def _flush_detail(self) -> None:
        """Show the highlighted node's detail now if it waits for the cursor to rest (a command about to act
        on ``current``)."""
        if self._detail is not None:
            self._detail.stop()
            self._settle()

    # -- details
    def show_node(self, ref: FileRef) -> None:
        view = self.view
        self.current = ref
        detail = self.query_one("#file-detail", KeyValue)
        try:
            node = view.node(ref)
        except NydusInspectError as exc:
            detail.show([("path", fsdecode(ref.path)), ("error", str(exc))])
            return
        detail.show(view.node_detail(node), fsdecode(node.path))
        table = self.query_one("#file-chunks", DataTable)
        table.clear()
        title = self.query_one("#file-chunks-title", Static)
        preview = self.query_one("#file-preview", ContentView)
        self.chunks_shown = []
        table.display = node.type == REG
        if self._reads is not None:
            self._reads.stop()
            self._reads = None
        if node.type == REG:
            title.update("chunks: resolving…")
            preview.show(Text("reading…", style="italic"))
            self._reads = self.set_timer(READ_DELAY, lambda: self._start_reads(view, ref, node))
        elif node.type == DIR:
            title.update("")
            n = view.dir_size(ref)
            preview.show("directory" if n is None else f"directory with {n:,} entr{'y' if n == 1 else 'ies'}")
        elif node.type == SYMLINK:
            title.update("")
            preview.show(f"symlink -> {fsdecode(node.target or b'')}")
        else:
            title.update("")
            preview.show(f"{node.type}: no content")

    def _start_reads(self, view: LayerView, ref: FileRef, node: Node) -> None:
        self._reads = None
        if ref is self.current:
            self._chunks(view, ref, node)
            self._preview(view, ref, node)

    @work(thread=True, exclusive=True, group="files-chunks")
    def _chunks(self, view: LayerView, ref: FileRef, node: Node) -> None:
        try:
            chunks, error = view.node_chunks(node), None
        except NydusInspectError as exc:
            chunks, error = [], str(exc)
        self.app.call_from_thread(self._show_chunks, ref, chunks, error)

    def _show_chunks(self, ref: FileRef, chunks: list, error: str | None) -> None:
        if ref is not self.current:
            return
        title = self.query_one("#file-chunks-title", Static)
        table = self.query_one("#file-chunks", DataTable)
        table.clear()
        self.chunks_shown = chunks[:MAX_CHUNK_ROWS]
        if error:
            title.update(Text(f"chunks: {error}", style="bold red"))
            return
        more = f" (first {MAX_CHUNK_ROWS})" if len(chunks) > MAX_CHUNK_ROWS else ""
        title.update(f"chunks: {len(chunks):,}{more} — c: show the highlighted one in the chunk table")
        for k, c in enumerate(self.chunks_shown):
            table.add_row(
                str(k),
                f"{c.file_offset:,}",
                str(c.blob_index),
                str(c.ci_index),
                f"{c.compressed_offset:,}",
                f"{c.compressed_size:,}",
                f"{c.uncompressed_offset:,}",
                f"{c.uncompressed_size:,}",
                "yes" if c.compressed else "no",
                c.digest.hex()[:16] + "…" if c.digest else "-",
            )

    @work(thread=True, exclusive=True, group="files-preview")
    def _preview(self, view: LayerView, ref: FileRef, node: Node) -> None:
        try:
            data = view.read_head(node, PREVIEW_BYTES)
            kind, body = content_preview(data, 0)
            head = (
                f"first {len(data):,} of {node.size:,} bytes ({kind})" if node.size > len(data) else f"{kind}"
            )
            parts: tuple = (Text(head + "\n", style="bold"), body)
        except NydusInspectError as exc:
            parts = (Text(f"content does not read: {exc}", style="bold red"),)
        self.app.call_from_thread(self._show_preview, ref, parts)

    def _show_preview(self, ref: FileRef, parts: tuple) -> None:
        if ref is self.current:
            self.query_one("#file-preview", ContentView).show(*parts)

    def action_show_chunk(self) -> None:
        self._flush_detail()
        table = self.query_one("#file-chunks", DataTable)
        if not self.chunks_shown:
            return
        c = self.chunks_shown[max(0, min(table.cursor_row, len(self.chunks_shown) - 1))]
        self.nydus.action_show("chunks")
        screen = self.app.screen
        if hasattr(screen, "select_chunk"):
            self.app.call_after_refresh(screen.select_chunk, c.blob_index, c.ci_index)

    def index_ready(self) -> None:
        self._flush_detail()
        if self.current is not None:
            self.show_node(self.current)
        if self.pending_search:
            text, self.pending_search = self.pending_search, None
            self.search(text, again=False)

    # -- search and reveal
    def search(self, text: str, again: bool) -> None:
        view = self.view
        if text.startswith("/") and view.is_v6 and self.go_to_path(text):
            return
        if view.index is None:
            if not view.is_v6:
                self.notify("no file tree to search", severity="warning")
                return
            self.pending_search = text
            self.nydus.ensure_index(view)
            self.notify("indexing the file tree; the search runs when it is done")
            return
        start = 0
        self._flush_detail()
        if again and self.current is not None:
            try:
                start = view.index.paths.index(self.current.path) + 1
            except ValueError:
                start = 0
        pos = view.index.search(text, start)
        if pos is None:
            self.notify(f"no path matches {text!r}", severity="warning")
            return
        self.reveal(view.index.paths[pos])

    def go_to_path(self, text: str) -> bool:
        """An absolute path goes to the node it names, symlinks followed as the kernel would (so
        ``/bin/bash`` finds ``/usr/bin/bash`` on a usr-merged image); False when it names nothing."""
        view = self.view
        try:
            with view.lock:
                node = resolve_in(view.layer.rafs, text)
        except NydusInspectError:
            return False
        return self.reveal(node.path)

    def reveal(self, path: bytes | str) -> bool:
        """Expand the tree down to ``path`` and put the cursor on it."""
        if isinstance(path, str):
            path = path.encode("utf-8", "surrogateescape")
        view = self.view
        node = self.tree.root
        for part in [p for p in path.split(b"/") if p]:
            ref = node.data
            pos = view.position(ref, part) if isinstance(ref, FileRef) else None
            if pos is None:
                self.notify(f"{fsdecode(path)} is not in the tree", severity="error")
                return False
            if node.id not in self.loaded or self.loaded[node.id] <= pos:
                self._load_children(view, node, until=pos)
            node.expand()
            target = None
            for child in node.children:
                if isinstance(child.data, FileRef) and child.data.path.rsplit(b"/", 1)[-1] == part:
                    target = child
                    break
            if target is None:
                return False
            node = target
        self.tree.focus()
        # Expanded nodes get their lines at the next refresh: move the cursor then.
        self.call_after_refresh(self._put_cursor, node)
        return True

    def _put_cursor(self, node: TreeNode) -> None:
        self.tree.move_cursor(node)
        self.tree.scroll_to_node(node, animate=False)
