"""nydus-inspect: read, pack, merge, unpack, mount and verify Nydus (RAFS v6) container image layers."""

from __future__ import annotations

from .errors import FormatError, NydusInspectError, UsageError, VerifyError
from .layer import Layer, open_layer
from .model import Chunk, Node

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
