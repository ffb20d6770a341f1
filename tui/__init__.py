"""nydus-inspect's Textual app: browse and verify nydus layers interactively (``nydus-inspect tui LAYER...``).

``tui.data`` turns an opened layer into what the screens show and does not import textual;
``tui.app`` holds :class:`~tui.app.NydusApp`, its screens live in ``tui.screens`` and its styles in
``app.tcss``. The app reads layers through nydus_inspect's public API only and never mounts anything.
"""

from __future__ import annotations

__all__ = ["NydusApp"]


def __getattr__(name: str):
    if name == "NydusApp":  # imported lazily: `nydus-inspect info` must not pay for textual
        from .app import NydusApp

        return NydusApp
    raise AttributeError(name)
