"""Checks of a plain EROFS image (``erofs.super``, ``erofs.inode``, ``erofs.nlink``, ``erofs.data``): the
superblock (features, checksum) decodes, every inode and directory of the tree decodes, link counts agree
with the names, and every regular file's data maps inside the image and reads (decompresses) to its size.
EROFS records no digest of file data: reading it whole is what can be checked. A ``--tar=i`` index records
none of its tar either; what shows the tar given is the one indexed is that each file's data follows its
own tar header there (``erofs.tar``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..chunks.ref import ChunkRef
from ..errors import FormatError, NydusInspectError
from ..formats.tar_header import BLOCK as TAR_BLOCK
from ..formats.tar_header import checksum_ok
from ..model import DIR, REG, WalkError, fsdecode
from ..query import FileIndex
from .findings import Finding, _check_nlinks, _exc_finding

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
    _check_nlinks(run, names, nlinks, "erofs.nlink", "erofs inode")
    run.count("inodes", len(names))
    run.tick("bootstrap", total, total)
    reader = layer.chunk_reader
    tar = _TarDevice(image, layer)
    run.tick("chunks", 0, len(files))
    for k, node in enumerate(files):
        try:
            got = 0
            chunks = image.chunks(node)
            if chunks and not tar.follows_header(chunks[0]):
                run.add(
                    Finding(
                        "erofs.tar",
                        "the block before the file's data in the tar given is not a tar header: not the tar "
                        "this index was made from",
                        file=tar.path,
                        path=fsdecode(node.path),
                        offset=chunks[0].compressed_offset - TAR_BLOCK,
                    )
                )
            for c in chunks:
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


class _TarDevice:
    """Extra device 1 of an image when it is a tar (a ``--tar=i`` index's): 512-byte blocks, and the device's
    first block is a tar header. A ``--blobdev`` file starts with chunk data instead, and is not held to tar
    headers (unless that data is itself a tar in a 512-byte-block image: then its findings say so)."""

    def __init__(self, image, layer) -> None:
        from ..erofs import DEVICE_BLOB

        self.blob_index = DEVICE_BLOB + 1
        self.source = None
        self.path = None
        if not image.esb.devices or not layer.extra_blobs or image.block_size != TAR_BLOCK:
            return
        try:
            device = layer.blob_file(self.blob_index).layer  # the layer's own, closed with it
            if checksum_ok(device.source.pread(0, TAR_BLOCK, "tar header")):
                self.source, self.path = device.source, device.path
        except NydusInspectError:
            pass  # the data checks say what is wrong with the device

    def follows_header(self, first: ChunkRef) -> bool:
        """Whether the file whose first chunk is ``first`` has a tar header right before its data (or is not
        on this device)."""
        if self.source is None or first.blob_index != self.blob_index:
            return True
        if first.compressed_offset < TAR_BLOCK:
            return False  # a tar's first block is a header, never a file's data
        try:
            block = self.source.pread(first.compressed_offset - TAR_BLOCK, TAR_BLOCK, "tar header")
        except NydusInspectError:
            return True  # reading the data itself reports it
        return checksum_ok(block)


def _check_seekable(run: _Run) -> None:
    """Every zstd frame of a seekable EROFS layer (``seekable.frame``): its SHA-512 when the chunk table
    records one, its decoding (with zstd's content checksum when the frame has one), and its size. The tree
    checks read only the frames that hold metadata or file data; this reads them all, and names the frame."""
    from ..seekable import SeekableErofs

    layer = run.layer
    src = layer.source
    if not isinstance(src, SeekableErofs):
        return
    # The table was located, not walked to: here, where every frame is read anyway, its entries are held to
    # where the frames really start, which names a wrong offset as such.
    from ..formats import seekable_erofs

    try:
        walked = seekable_erofs.walked(lambda off, n: src.stored(off, n, "seekable erofs"), src.stored_size)
        if walked != src.table:
            raise FormatError(
                "seekable erofs chunk table",
                f"the table read is not the one after the frames (at {walked.offset})",
                offset=src.table.offset,
            )
    except NydusInspectError as exc:
        run.add(_exc_finding("seekable.frame", exc, file=layer.path))
    frames = src.table.frames
    run.tick("frames", 0, len(frames))
    for f in frames:
        try:
            src.frame(f.index)
        except NydusInspectError as exc:
            run.add(_exc_finding("seekable.frame", exc, file=layer.path))
        run.tick("frames", f.index + 1, len(frames))
    run.count("zstd frames", len(frames))


#: Data is hashed for the dm-verity check in reads of this size.
_VERITY_READ = 1 << 20


def _verity_payload(layer, data_size: int):
    """(read(offset, size), size, file offset) of the dm-verity payload that goes with the EROFS image of
    ``layer``, or None: after the image in a plain EROFS file, or a seekable layer's last skippable frame
    (its superblock and hash tree cover the image inside, not the frames)."""
    from ..seekable import SeekableErofs

    src = layer.source
    if isinstance(src, SeekableErofs):
        place = src.verity_payload()
        if place is None:
            return None
        at, size = place
        return (lambda off, n: src.stored(at + off, n, "dm-verity payload")), size, at
    if layer.size <= data_size:
        return None
    return (
        (lambda off, n: layer.pread(data_size + off, n, "dm-verity payload")),
        layer.size - data_size,
        data_size,
    )


def _check_verity(run: _Run) -> None:
    """A dm-verity payload after the image, or in a seekable layer's last frame (``verity.payload``,
    ``verity.data``, ``verity.hash``, ``verity.root``): every data block and hash block is hashed and compared
    with the tree, top down from the root hash given (``run.verity_root``) or, without one, the tree's own
    (then only its consistency is checked, as a note says)."""
    from ..formats import verity
    from ..formats._struct import round_up
    from ..formats.rafs_v6 import BLOCK_SIZE

    layer = run.layer
    root_given, salt = run.verity_root, run.verity_salt
    try:
        image = layer.rafs
        # s_blocks is in the image's own blocks (512 to 4096 bytes); dm-verity hashes in 4096-byte ones.
        data_size = round_up(image.sb.s_blocks * image.block_size, BLOCK_SIZE)
    except NydusInspectError:
        return
    payload = _verity_payload(layer, data_size)
    if payload is None:
        if root_given is None:
            return
        raise VerityInputError(
            f"no dm-verity payload: the layer ends with the EROFS image ({data_size} bytes), a root hash was given"
        )
    read, size, at = payload
    head = read(0, min(size, verity.SUPERBLOCK_SIZE))
    if head.startswith(verity.SIGNATURE):
        params = verity.Superblock.parse(head).params
        tree_start = round_up(verity.SUPERBLOCK_SIZE, params.hash_block_size)
        if params.data_blocks * params.data_block_size != data_size:
            raise VerityInputError(
                f"dm-verity superblock at offset {at} covers {params.data_blocks} blocks of "
                f"{params.data_block_size} bytes, the EROFS image is {data_size} bytes"
            )
        if salt is not None and salt != params.salt:
            run.report.notes.append("--salt differs from the dm-verity superblock's; the superblock's used")
    else:
        params = verity.Params(data_blocks=data_size // BLOCK_SIZE)
        if salt is not None:
            params.salt = salt
        tree_start = 0
        run.report.notes.append(
            f"no dm-verity superblock at offset {at}: sha256, {BLOCK_SIZE}-byte blocks and salt "
            f"{params.salt.hex() or '(none)'} assumed"
        )
    tree_offset = at + tree_start
    if size - tree_start != params.tree_size():
        raise VerityInputError(
            f"dm-verity hash tree at offset {tree_offset} is {size - tree_start} bytes, "
            f"{params.tree_size()} expected for {params.data_blocks} data blocks"
        )
    leaves: list[bytes] = []
    bs = params.data_block_size
    run.tick("verity", 0, data_size)
    for off in range(0, data_size, _VERITY_READ):
        want = min(_VERITY_READ, data_size - off)
        try:
            piece = _image_bytes(layer, off, want)
        except NydusInspectError:
            # A frame of a seekable layer that does not decode (seekable.frame names it): read block by
            # block, and a block that cannot be read cannot match its leaf (b"" is no digest).
            for b in range(off, off + want, bs):
                try:
                    leaves.append(params.digest(_image_bytes(layer, b, bs)))
                except NydusInspectError:
                    leaves.append(b"")
            run.tick("verity", off + want, data_size)
            continue
        view = memoryview(piece)
        leaves.extend(params.digest(view[i : i + bs]) for i in range(0, len(piece), bs))
        run.tick("verity", off + len(piece), data_size)
    tree = read(tree_start, params.tree_size())
    top = verity.root_block(params)
    computed = leaves[0] if top is None else params.digest(tree[top : top + params.hash_block_size])
    root = root_given if root_given is not None else computed
    if root_given is None:
        run.report.notes.append(
            f"no root hash given (--root-hash): the dm-verity tree checked against its own root {computed.hex()}"
        )
    damage = verity.check_tree(params, leaves, tree, root)
    for d in damage:
        if d.where == "data":
            run.add(
                Finding(
                    "verity.data",
                    f"data block {d.block} does not match its dm-verity hash",
                    structure="dm-verity data block",
                    file=layer.path,
                    offset=d.block * bs,
                )
            )
        elif not d.certain and root_given is not None:
            run.add(
                Finding(
                    "verity.root",
                    f"the root hash given is not the tree's (or its top hash block {d.block} is damaged)",
                    structure="dm-verity root hash",
                    file=layer.path,
                    offset=tree_offset + d.block * params.hash_block_size,
                    expected=root_given.hex(),
                    found=computed.hex(),
                )
            )
        else:
            run.add(
                Finding(
                    "verity.hash",
                    f"hash block {d.block} (level {d.level}) does not match "
                    + (
                        "the root hash"
                        if d.level == len(params.levels()) - 1
                        else "its hash in the level above"
                    ),
                    structure="dm-verity hash block",
                    file=layer.path,
                    offset=tree_offset + d.block * params.hash_block_size,
                )
            )
    run.count("dm-verity blocks", params.data_blocks + params.tree_blocks())


def _image_bytes(layer, off: int, want: int) -> bytes:
    # An image inside a seekable layer may stop short of its last block's end: dm-verity hashes it padded.
    return layer.pread(off, max(0, min(want, layer.size - off)), "EROFS image").ljust(want, b"\0")


class VerityInputError(FormatError):
    """A dm-verity payload that cannot be checked at all (wrong size, no payload where one is expected)."""

    def __init__(self, message: str) -> None:
        super().__init__("dm-verity", message)
