"""Write a plain EROFS image from an OCI layer tar, as containerd's EROFS converter has mkfs.erofs do it.

containerd runs ``mkfs.erofs --tar=f --aufs --quiet -Enoinline_data -b4096 -U UUID`` on each layer tar:
every file's data in whole blocks of the image (no tail packing), and OCI whiteouts turned into overlayfs
ones (``.wh.NAME`` becomes a 0/0 character device NAME, ``.wh..wh..opq`` the ``trusted.overlay.opaque=y``
xattr of its directory, and a directory holding a whiteout gets an empty ``trusted.overlay.origin``).

The layout is :mod:`.builder`'s, the one that writes RAFS v6 bootstraps (EROFS metadata): the same inodes,
xattrs, directories and symlinks, with regular files stored flat after the metadata instead of as chunk
indexes. ``--dm-verity`` then appends a dm-verity payload (:mod:`.formats.verity`) over the image.

``--erofs-compression SPEC`` (containerd passes it to ``mkfs.erofs -z``) compresses regular files: each is
cut into extents of ``pcluster_blocks`` blocks (the last one shorter), each compressed on its own into a
pcluster of whole blocks, right-aligned in it (0padding); an extent that does not come out at least one
block smaller is stored as is, a block per pcluster. A file none of whose extents shrinks stays flat, as
do files of one block or less, directories and symlinks. Compressed files have legacy lcluster indexes
(:func:`.formats.erofs_zmap.build_full_map`); the superblock gets 0padding, big pclusters and the chosen
algorithm's configuration record. Where mkfs.erofs fits as much data as it can into each pcluster, these
extents have a fixed decoded size, which is what lets their compression run in parallel.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import multiprocessing
import os
import shutil
import stat
import struct
import tempfile
import uuid as uuid_mod
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import builder
from .erofs_codecs import Codec
from .errors import FormatError, UsageError
from .formats import erofs as ferofs
from .formats import erofs_zmap, rafs_v6, verity
from .formats.rafs_v6 import BLOCK_SIZE
from .fsutil import atomic_output
from .model import CHR, DIR, REG, Node
from .tarstream import TarTree, hardlink_rule, open_tar_input, read_tar

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.erofs.layer.v1"
#: Where the seed converter keeps the dm-verity parameters of a layer (on its descriptor).
ANNOTATION_ROOT_DIGEST = "dev.containerd.erofs.dmverity.root_digest"
ANNOTATION_OFFSET = "dev.containerd.erofs.dmverity.offset"
ANNOTATION_BLOCK_SIZE = "dev.containerd.erofs.dmverity.block_size"

WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
XATTR_OPAQUE = b"trusted.overlay.opaque"
XATTR_ORIGIN = b"trusted.overlay.origin"
#: Data is copied to the image in pieces of this size (a multiple of the block size).
COPY_STEP = 1 << 20
#: Decoded size of a compressed extent, in blocks: 64 KiB, lz4's whole window (mkfs.erofs -C65536).
PCLUSTER_BLOCKS = 16
#: Extents handed to the compressing workers and not yet written (bounds the memory they take).
EXTENTS_IN_FLIGHT = 64


@dataclass
class ErofsOptions:
    inline_data: bool = False  # containerd passes -Enoinline_data
    aufs: bool = True  # containerd passes --aufs
    uuid: bytes = bytes(16)
    dm_verity: bool = False
    verity_superblock: bool = True
    salt: bytes = verity.DEFAULT_SALT
    progress: Callable[[int], None] | None = None
    #: ``--erofs-compression``, parsed: the first algorithm compresses every pcluster; the others (mkfs.erofs
    #: may pick one of them per pcluster) are accepted and not used.
    compression: tuple[Codec, ...] = ()
    pcluster_blocks: int = PCLUSTER_BLOCKS
    workers: int = 0  # compressing threads (or processes, see _pool); 0: one per CPU


@dataclass
class ErofsResult:
    path: str
    size: int  # the whole file, verity payload included
    erofs_size: int
    digest: str  # sha256 of the whole file
    inodes: int
    files: int
    data_bytes: int
    root_hash: str | None = None
    hash_offset: int | None = None
    verity_superblock: bool = False
    warnings: list[str] = field(default_factory=list)
    compression: str | None = None  # the algorithm (and level) data was compressed with
    compressed_files: int = 0
    compressed_blocks: int = 0  # blocks of the compressed files' pclusters

    def annotations(self) -> dict[str, str]:
        """The descriptor annotations the seed converter writes for a dm-verity payload."""
        if self.root_hash is None:
            return {}
        return {
            ANNOTATION_ROOT_DIGEST: f"sha256:{self.root_hash}",
            ANNOTATION_OFFSET: str(self.hash_offset),
        }

    def to_json(self) -> dict:
        out = {
            "path": self.path,
            "digest": f"sha256:{self.digest}",
            "size": self.size,
            "erofs_size": self.erofs_size,
            "inodes": self.inodes,
            "files": self.files,
            "data_bytes": self.data_bytes,
        }
        if self.compression is not None:
            out["compression"] = {
                "algorithm": self.compression,
                "files": self.compressed_files,
                "blocks": self.compressed_blocks,
            }
        if self.root_hash is not None:
            out["dm_verity"] = {
                "root_hash": self.root_hash,
                "hash_offset": self.hash_offset,
                "superblock": self.verity_superblock,
                "block_size": verity.DEFAULT_BLOCK_SIZE,
                "annotations": self.annotations(),
            }
        return out


def containerd_uuid(diff_id: str) -> bytes:
    """The filesystem UUID containerd gives a converted layer: SHA-1 name UUID of ``erofs:blobs/<diffID>``."""
    return uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, "erofs:blobs/" + diff_id).bytes


def aufs_to_overlay(root: Node) -> None:
    """OCI whiteouts to overlayfs ones, as ``mkfs.erofs --aufs`` does."""
    stack = [root]
    while stack:
        d = stack.pop()
        kids = d.children or {}
        marked = False
        for name in sorted(kids):
            node = kids[name]
            if name == WH_OPAQUE:
                del kids[name]
                d.xattrs = {
                    **d.xattrs,
                    XATTR_OPAQUE: b"y",
                }  # a dict of its own (tree nodes share an empty one)
            elif name.startswith(WH_PREFIX) and len(name) > len(WH_PREFIX):
                del kids[name]
                target = name[len(WH_PREFIX) :]
                path = d.path.rstrip(b"/") + b"/" + target
                # mkfs.erofs keeps the entry's owner and time, but not its permission bits.
                kids[target] = Node(
                    path=path, type=CHR, mode=stat.S_IFCHR, uid=node.uid, gid=node.gid, mtime=node.mtime
                )
                marked = True
        if marked and XATTR_ORIGIN not in d.xattrs:
            d.xattrs = {**d.xattrs, XATTR_ORIGIN: b""}
        stack.extend(c for c in kids.values() if c.type == DIR)


def pack_erofs(source: str, output: str, opts: ErofsOptions | None = None) -> ErofsResult:
    """The layer tar at ``source`` ('-' for stdin; plain, gzip or zstd) as a plain EROFS image at ``output``."""
    with atomic_output(output) as out:
        result = pack_erofs_into(source, out, opts, os.path.dirname(os.path.abspath(output)))
    result.path = output
    return result


def pack_erofs_into(source: str, out, opts: ErofsOptions | None, spool_dir: str) -> ErofsResult:
    """The image of the layer tar at ``source`` written to the file object ``out`` (a spool for file data
    that cannot be read in place goes in ``spool_dir``)."""
    opts = opts or ErofsOptions()
    with tempfile.TemporaryFile(dir=spool_dir) as spool:

        def on_file(node: Node, fobj, ref) -> None:
            # A plain tar file is read in place later; anything else (stdin, gzip, zstd) is kept in a spool.
            if ref is not None:
                node.data = ref
                return
            start = spool.seek(0, os.SEEK_END)
            shutil.copyfileobj(fobj, spool, COPY_STEP)
            node.data = (spool.fileno(), start)

        with open_tar_input(source) as stream:
            tree = read_tar(
                stream, on_file, source, progress=opts.progress, hardlinks=hardlink_rule(erofs=True)
            )
            spool.flush()
            result = write_erofs(tree, out, opts, spool_dir)
    for warning in tree.warnings:
        log.warning("%s", warning)
    return result


def write_erofs(tree: TarTree, out, opts: ErofsOptions, spool_dir: str | None = None) -> ErofsResult:
    """Write the image of ``tree`` (regular files' ``data`` = (fd, offset) of their bytes) to ``out``
    (compressed pclusters are spooled in ``spool_dir``, the system's temporary directory by default)."""
    if opts.aufs:
        aufs_to_overlay(tree.root)
    if not opts.compression:
        return _write(tree, out, opts, {}, -1)
    # The pclusters go to a spool first: where each file's data starts depends on all the metadata, whose
    # size depends on which files end up compressed.
    with tempfile.TemporaryFile(dir=spool_dir) as zspool:
        zfiles = _compress_files(tree.root, zspool, opts)
        zspool.flush()
        return _write(tree, out, opts, zfiles, zspool.fileno())


@dataclass
class _ZFile:
    """A regular file stored compressed: its pclusters, whose blocks are at ``offset`` of the spool."""

    pclusters: list[erofs_zmap.Pcluster]
    offset: int
    blocks: int


def _compress_files(root: Node, spool, opts: ErofsOptions) -> dict[int, _ZFile]:
    """Compress every regular file larger than a block into ``spool`` (its pclusters as the image will hold
    them); the files that gained nothing are left out (they stay flat).

    Extents of all files go to the workers as one stream, a bounded number in flight, and come back in
    order: most files are a single extent, so waiting for each file's own would leave workers idle."""
    codec = opts.compression[0]
    bs = BLOCK_SIZE
    if opts.pcluster_blocks < 2:
        raise ValueError("an extent of one block cannot shrink by a block")
    step = opts.pcluster_blocks * bs
    out: dict[int, _ZFile] = {}

    def files():
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node.type == DIR:
                stack.extend(node.children[k] for k in sorted(node.children or {}, reverse=True))
            elif node.type == REG and node.size > bs and id(node) not in seen:
                seen.add(id(node))
                yield node

    current: Node | None = None
    start = blocks = 0
    pclusters: list[erofs_zmap.Pcluster] = []

    def finish() -> None:
        if current is None:
            return
        if all(pc.plain for pc in pclusters):
            spool.seek(start)
            spool.truncate()
        else:
            out[id(current)] = _ZFile(pclusters, start, blocks)

    def take(node: Node, data: bytes, z: bytes | None) -> None:
        nonlocal current, start, blocks, pclusters
        if node is not current:
            finish()
            current, start, blocks, pclusters = node, spool.seek(0, os.SEEK_END), 0, []
        if z is None:
            # Stored as is, a block per pcluster, as mkfs.erofs does with what does not shrink.
            for i in range(0, len(data), bs):
                part = data[i : i + bs]
                pclusters.append(erofs_zmap.Pcluster(len(part), 1, True))
                spool.write(part.ljust(bs, b"\0"))
                blocks += 1
        else:
            n = -(-len(z) // bs)
            pclusters.append(erofs_zmap.Pcluster(len(data), n, False))
            spool.write(z.rjust(n * bs, b"\0"))  # 0padding: the stream ends the pcluster
            blocks += n

    encode = functools.partial(_encode_extent, codec, step)
    workers = opts.workers or os.cpu_count() or 1
    with _pool(codec, workers) as pool:
        window: collections.deque = collections.deque()
        for node in files():
            fd, off = node.data
            for at in range(0, node.size, step):
                data = _pread(fd, min(step, node.size - at), off + at, node)
                window.append((node, data, pool.submit(encode, data)))
                if len(window) >= EXTENTS_IN_FLIGHT:
                    n, d, fut = window.popleft()
                    take(n, d, fut.result())
        while window:
            n, d, fut = window.popleft()
            take(n, d, fut.result())
        finish()
    return out


def _encode_extent(codec: Codec, step: int, data: bytes) -> bytes | None:
    """``data`` compressed, if that saves at least a block."""
    raw_blocks = -(-len(data) // BLOCK_SIZE)
    if raw_blocks < 2:
        return None
    return codec.encode(data, (raw_blocks - 1) * BLOCK_SIZE, step)


def _pool(codec: Codec, workers: int) -> Executor:
    """Threads, where the codec lets go of the GIL while it compresses (zstd, zlib, liblzma through
    ctypes); python-lz4 keeps it, so lz4hc, whose high levels take most of a pack's time, gets processes.
    They are forked, so that they are this process's children and their CPU time is counted as its own
    (a fork server's would not be); they run nothing but the codec. lz4's fast mode is not worth the
    copies to and from another process."""
    if codec.name == "lz4hc" and workers > 1:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _write(tree: TarTree, out, opts: ErofsOptions, zfiles: dict[int, _ZFile], zfd: int) -> ErofsResult:
    plan = builder.plan_bootstrap(
        tree.root,
        0,
        chunk_size=BLOCK_SIZE,
        flat_files="inline" if opts.inline_data else "plain",
        compressed={k: z.blocks for k, z in zfiles.items()},
    )
    codec = opts.compression[0] if opts.compression else None
    slots = plan.slots
    nodes = slots.nodes
    for i in slots.zmap:
        z = zfiles[id(nodes[i])]
        slots.zmap[i] = erofs_zmap.build_full_map(
            z.pclusters, slots.blkaddr[i], codec.alg, BLOCK_SIZE, opts.pcluster_blocks > 1
        )
    files = [i for i, node in enumerate(nodes) if node.type == REG]
    for i in files:
        if slots.layout[i] == rafs_v6.LAYOUT_FLAT_INLINE:
            node = nodes[i]
            fd, off = node.data
            tail_len = slots.size[i] % BLOCK_SIZE
            slots.tail[i] = _pread(fd, tail_len, off + slots.data_blocks[i] * BLOCK_SIZE, node)
    buf = builder.render_plan(plan)
    total = plan.files_end
    if total >= 1 << 44:
        raise UsageError(f"the image would be {total} bytes: over EROFS's 2^32 blocks of 4 KiB")
    sb = rafs_v6.SuperBlock(
        s_feature_compat=ferofs.FEATURE_COMPAT_SB_CHKSUM | ferofs.FEATURE_COMPAT_MTIME,
        s_inos=len(slots),
        s_blocks=total // BLOCK_SIZE,
        s_meta_blkaddr=0,
        s_uuid=opts.uuid,
        s_feature_incompat=0,
        s_devt_slotoff=0,
    )
    cfgs = b""
    if codec is not None:
        # As mkfs.erofs does whenever it compresses: streams right-aligned in their pclusters, and (the
        # same bit) big pclusters and the algorithm's configuration record, which readers size their
        # buffers and windows from; u1 then is the bitmap of algorithms.
        sb.s_feature_incompat = ferofs.FEATURE_INCOMPAT_LZ4_0PADDING | ferofs.FEATURE_INCOMPAT_BIG_PCLUSTER
        sb.s_u = 1 << codec.alg
        step = opts.pcluster_blocks * BLOCK_SIZE
        cfgs = erofs_zmap.build_compr_cfgs({codec.alg: codec.config(step, opts.pcluster_blocks)})
    end = ferofs.SB_OFFSET + rafs_v6.SUPERBLOCK.size
    buf[ferofs.SB_OFFSET : end] = sb.build()
    buf[end : end + len(cfgs)] = cfgs
    struct.pack_into("<I", buf, ferofs.SB_OFFSET + 4, ferofs.sb_checksum(buf))

    sink = _Sink(out, verity.Params(data_blocks=1, salt=opts.salt) if opts.dm_verity else None)
    sink.write(buf)
    del buf
    data_bytes = 0
    zblocks = 0
    for i in files:
        if not slots.data_blocks[i]:
            continue
        node = nodes[i]
        z = zfiles.get(id(node))
        if z is not None:
            _copy(sink, zfd, z.offset, z.blocks * BLOCK_SIZE, node)
            zblocks += z.blocks
            data_bytes += slots.size[i]
            continue
        fd, off = node.data
        want = slots.data_blocks[i] * BLOCK_SIZE
        have = min(want, slots.size[i])
        done = 0
        while done < have:
            n = min(COPY_STEP, have - done)
            piece = _pread(fd, n, off + done, node)
            if n < COPY_STEP and done + n == have:
                piece += bytes(want - have)  # the last block's tail, zero-padded
            sink.write(piece)
            done += n
        data_bytes += slots.size[i]
    assert sink.size == total, (sink.size, total)
    result = ErofsResult(
        path="",
        size=total,
        erofs_size=total,
        digest="",
        inodes=len(slots),
        files=len(files),
        data_bytes=data_bytes,
        warnings=list(tree.warnings),
    )
    if codec is not None:
        result.compression = str(codec)
        result.compressed_files = len(zfiles)
        result.compressed_blocks = zblocks
    if opts.dm_verity:
        params = verity.Params(data_blocks=total // BLOCK_SIZE, salt=opts.salt)
        root, tree_bytes = verity.build_tree(params, sink.leaves)
        sink.leaves = None
        if opts.verity_superblock:
            sink.write(verity.Superblock(params, verity.uuid_for(root)).build(params.hash_block_size))
        sink.write(tree_bytes)
        result.root_hash = root.hex()
        result.hash_offset = total
        result.verity_superblock = opts.verity_superblock
        result.size = sink.size
    result.digest = sink.sha.hexdigest()
    return result


class _Sink:
    """The output, hashed as it is written (sha256 of the file; dm-verity digests of each data block)."""

    def __init__(self, out, params: verity.Params | None) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.leaves: list[bytes] | None = [] if params else None
        self._verity = params

    def write(self, data: bytes) -> None:
        if self.leaves is not None:
            # Every write of the image proper is whole blocks, so each block is hashed as it goes by.
            assert self.size % BLOCK_SIZE == 0 and len(data) % BLOCK_SIZE == 0
            digest = self._verity.digest
            view = memoryview(data)
            self.leaves.extend(digest(view[i : i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE))
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)


def _copy(sink: _Sink, fd: int, offset: int, size: int, node: Node) -> None:
    done = 0
    while done < size:
        n = min(COPY_STEP, size - done)
        sink.write(_pread(fd, n, offset + done, node))
        done += n


def _pread(fd: int, size: int, offset: int, node: Node) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise FormatError(
            "tar", f"{os.fsdecode(node.path)}: file data ends early", offset=offset, value=len(data)
        )
    return data
