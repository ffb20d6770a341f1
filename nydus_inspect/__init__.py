"""nydus-inspect: read, pack, merge, unpack, mount and verify Nydus (RAFS v6) container image layers."""

from __future__ import annotations

from .errors import FormatError, NydusInspectError, UsageError, VerifyError

__all__ = [
    "Chunk",
    "FormatError",
    "Layer",
    "Node",
    "NydusInspectError",
    "UsageError",
    "VerifyError",
    "open_layer",
]

# The reader is imported on first use, so that a command that does not need it (pack, --help) does
# not pay for it at start-up.
_LAZY = {"Layer": "layer", "open_layer": "layer", "Chunk": "model", "Node": "model"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
