"""nydus-inspect: read, pack, merge, unpack, mount and verify Nydus (RAFS v6) container image layers."""

from __future__ import annotations

from .errors import FormatError, NydusInspectError, UsageError, VerifyError

__all__ = [
    "Chunk",
    "ChunkRef",
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
_LAZY = {
    "Layer": ("layer", "Layer"),
    "open_layer": ("layer", "open_layer"),
    "ChunkRef": ("chunks.ref", "ChunkRef"),
    "Chunk": ("chunks.ref", "ChunkRef"),  # the name before the chunk service: the same type
    "Node": ("model", "Node"),
}


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = where
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
