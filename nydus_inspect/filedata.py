"""Regular files' data, read ahead and handed over a chunk at a time, whatever the size of the file.

The read-ahead (``chunks.readahead.iter_with_data``) decodes a file's chunks as one group; a file of 4 GiB made of
one chunk repeated (a legal layer of 1 MB) would then be held whole. Here a big file goes to the read-ahead
as pieces of at most PIECE_BYTES of chunks, so that what is decoded ahead of the consumer stays within the
read-ahead's window plus a piece, and the consumer gets the file's bytes as an iterator of chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .chunks.readahead import iter_with_data
from .layer import Layer
from .model import REG, Node

#: A file is handed to the read-ahead in pieces of at most this many bytes of chunks (one chunk at least).
PIECE_BYTES = 8 << 20


class _Piece:
    """Some consecutive chunks of one file, which the read-ahead takes for a file of its own."""

    __slots__ = ("chunks", "node", "size", "last")

    type = REG

    def __init__(self, node: Node, chunks: list, last: bool) -> None:
        self.node = node
        self.chunks = chunks
        self.size = sum(c.uncompressed_size for c in chunks)
        self.last = last


def _split(layer: Layer, nodes: Iterable[Node]) -> Iterator:
    rafs = layer.rafs
    for node in nodes:
        if node.type != REG or node.size <= PIECE_BYTES:
            yield node
            continue
        chunks = node.chunks if node.chunks is not None else rafs.chunks(node)
        if not chunks:
            yield node
            continue
        piece: list = []
        size = 0
        for c in chunks:
            if piece and size + c.uncompressed_size > PIECE_BYTES:
                yield _Piece(node, piece, False)
                piece, size = [], 0
            piece.append(c)
            size += c.uncompressed_size
        yield _Piece(node, piece, True)


def iter_file_data(layer: Layer, nodes: Iterable[Node]) -> Iterator[tuple[Node, Iterator[bytes] | None]]:
    """``(node, data)`` in order: for a regular file ``data`` yields its checked bytes chunk by chunk (the
    caller reads it through before taking the next node), for anything else it is None."""
    it = iter_with_data(layer, _split(layer, nodes))

    def file_data(first) -> Iterator[bytes]:
        item, results = first
        while True:
            for r in results or ():
                yield r.result()
            if not isinstance(item, _Piece) or item.last:
                return
            item, results = next(it)

    try:
        for item, results in it:
            node = item.node if isinstance(item, _Piece) else item
            if results is None:
                yield node, None
                continue
            data = file_data((item, results))
            yield node, data
            for _ in data:  # whatever the caller did not read
                pass
    finally:
        it.close()
