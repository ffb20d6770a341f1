"""Help: every key of every screen, and the syntax of the prompts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from ..data import FILTER_HELP, JUMP_HELP

HELP = f"""\
# nydus-inspect

Keyboard first; the mouse works too (click rows, tabs of the footer, scroll).

| keys | everywhere |
|---|---|
| `1` `2` `3` `4` `5` `6` | Overview, ToC, Chunks, Files, Verify, Analysis |
| `/` | search this screen; `n` finds the next match |
| `[` `]` | previous / next opened layer |
| `ctrl+p` | command palette (screens, layers, verify, theme) |
| `?` `f1` | this help; `escape` closes it |
| `q` | quit |

| screen | keys |
|---|---|
| Overview | `Enter` on an opened layer shows it |
| ToC | `v` check the entry's sha256, `a` check all; the lower pane previews the entry |
| Chunks | `g` jump, `f` filter, `x` clear the filter, `v` verify the chunk, `b` next blob, `PgUp` `PgDn` `Home` `End` |
| Files | `Enter` expands, `c` shows the highlighted chunk in the chunk table |
| Verify | `r` run, `c` cancel, `Enter` shows where a finding is |
| Analysis | what each layer adds, modifies, removes and wastes (`analyze`); `r` analyzes again |

**Jump** (`g` on Chunks): {JUMP_HELP}

**Filter** (`f` on Chunks): {FILTER_HELP}

**Search** (`/`): ToC entry names; chunk index, digest prefix or file path; file paths (on Files, a path
that starts with `/` goes to the file it names, symlinks followed as the kernel follows them); findings.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP, id="help-text")

    def action_close(self) -> None:
        self.dismiss()
