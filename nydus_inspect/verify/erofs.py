"""Checks of a plain EROFS image (``erofs.super``, ``erofs.inode``, ``erofs.nlink``, ``erofs.data``): the
superblock (features, checksum) decodes, every inode and directory of the tree decodes, link counts agree
with the names, and every regular file's data maps inside the image and reads (decompresses) to its size.
EROFS records no digest of file data: reading it whole is what can be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NydusInspectError
from ..model import DIR, REG, WalkError, fsdecode
from ..query import FileIndex
from .findings import Finding, _exc_finding

if TYPE_CHECKING:
    from .run import _Run


def _check_erofs(run: _Run) -> None:
    layer = run.layer
    try:
        image = layer.rafs
    except NydusInspectError as exc:
        run.add(_exc_finding("erofs.super", exc, file=layer.path))
        return
    index = FileIndex()
    run.index = index
    total = image.inode_count()

    def bad_walk(err: WalkError) -> None:
        index.errors.append(err)
        run.add(_exc_finding("erofs.inode", err.error, path=fsdecode(err.path), file=layer.path))

    names: dict[int, int] = {}  # nid -> names (non-directories) or subdirectories + 2 (directories)
    nlinks: dict[int, tuple[int, bytes, str]] = {}  # nid -> (i_nlink, first path, type)
    dirs: dict[bytes, int] = {}  # directory path -> nid
    files = []
    run.tick("bootstrap", 0, total)
    for n, node in enumerate(image.walk(on_error=bad_walk)):
        index.add_path(node.path, node.type == DIR)
        if node.type == DIR:
            names.setdefault(node.nid, 2)
            parent = dirs.get(node.path.rsplit(b"/", 1)[0] or b"/")
            if node.path != b"/" and parent is not None:
                names[parent] += 1
            dirs[node.path] = node.nid
        else:
            names[node.nid] = names.get(node.nid, 0) + 1
        if node.nid not in nlinks:
            nlinks[node.nid] = (node.nlink, node.path, node.type)
            if node.type == REG:
                index.files += 1
                files.append(node)
        if n & 1023 == 1023:
            run.tick("bootstrap", n + 1, total)
    for nid, count in names.items():
        nlink, path, ntype = nlinks[nid]
        if nlink != count:
            what = "2 + its subdirectories" if ntype == DIR else "its names in the tree"
            run.add(
                Finding(
                    "erofs.nlink",
                    f"i_nlink differs from {what}",
                    structure="erofs inode",
                    file=layer.path,
                    path=fsdecode(path),
                    field="i_nlink",
                    expected=str(count),
                    found=str(nlink),
                )
            )
    run.count("inodes", len(names))
    run.tick("bootstrap", total, total)
    reader = layer.chunk_reader
    run.tick("chunks", 0, len(files))
    for k, node in enumerate(files):
        try:
            got = 0
            for c in image.chunks(node):
                got += len(reader.decode(c))
            if got != node.size:
                run.add(
                    Finding(
                        "erofs.data",
                        "the data read differs in size from i_size",
                        file=layer.path,
                        path=fsdecode(node.path),
                        expected=str(node.size),
                        found=str(got),
                    )
                )
            run.count("bytes", got)
        except NydusInspectError as exc:
            run.add(_exc_finding("erofs.data", exc, path=fsdecode(node.path), file=layer.path))
        node.chunks = None
        run.tick("chunks", k + 1, len(files))
    run.count("files", len(files))
