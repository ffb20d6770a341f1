"""A plain EROFS image (mkfs.erofs, containerd's EROFS layers) read through the one lazy reader.

:class:`Erofs` is :class:`~nydus_inspect.model.RafsV6` without the nydus parts: inodes, directories,
symlinks and the walk are the shared ones; what differs is the superblock (no RAFS extended superblock,
blob table or chunk table), compact inodes' mtimes, shared xattrs and long name prefixes, and where a
regular file's bytes are: in the image itself. A file's data is handed to the chunk service as chunk
references: uncompressed ones over the image (blob :data:`IMAGE_BLOB`) and over a source of zeros for
holes (blob :data:`HOLE_BLOB`), in pieces of at most :data:`PIECE` bytes; one per compressed extent (blob
:data:`Z_BLOB` + its format, decoded by :class:`ErofsChunkReader` through :mod:`.erofs_codecs`, at most
12 MiB each); and pieces of the packed inode's data for fragments (:data:`FRAGMENT_BLOB`). So every reader
(cat, unpack, diff, verify) reads it the one way and never holds a whole large file. EROFS records no
digest of file data, so there is nothing to check these bytes against.
"""

from __future__ import annotations

import bisect
import struct
import threading
from typing import TYPE_CHECKING

from .chunks.decode import ChunkReader
from .chunks.ref import ChunkRef
from .chunks.resolve import Blob
from .codecs import Compressor
from .digests import Digester
from .errors import FormatError, UsageError
from .formats import erofs, erofs_zmap, rafs_v6
from .model import _LRU, REG, Node, RafsV6, fsdecode

if TYPE_CHECKING:
    from .layer import Layer

#: The most chunk references one file may need (256 GiB of data at PIECE bytes each): a forged i_size of a
#: file without blocks (all hole) must not make the reader build a list without bound.
MAX_PIECES = 1 << 18
IMAGE_BLOB = 0
HOLE_BLOB = 1
#: Compressed extents: blob Z_BLOB + their format (erofs_zmap ALG_* / FMT_*), + Z_PARTIAL for a partial reference.
Z_BLOB = 2
Z_PARTIAL = 8
#: Ranges of the packed inode's data (fragments).
FRAGMENT_BLOB = Z_BLOB + erofs_zmap.FMT_FRAGMENT
#: Data on extra device k (mkfs.erofs --blobdev): blob DEVICE_BLOB + k, the file given with --blob.
DEVICE_BLOB = 64
#: The largest piece of a file one chunk reference covers (block-aligned).
PIECE = 1 << 20
_U32 = struct.Struct("<I").unpack


class _Zeros:
    """The source of a hole's bytes."""

    path = "(hole)"

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        return bytes(size)


class _HoleFile:
    """What a Blob needs of a layer, for holes: zeros, and no recorded digests."""

    source = _Zeros()
    path = _Zeros.path
    kind = None  # no layer kind: none of the per-kind views of a Blob (zran, eStargz members) applies
    chunk_digests = None
    chunk_infos = None

    def close(self) -> None:
        pass


class _DeviceFile:
    """What a Blob needs of a layer, for an extra device's file: its bytes, and no recorded digests."""

    kind = None
    chunk_digests = None
    chunk_infos = None

    def __init__(self, path: str) -> None:
        from .chunks.source import LocalFile

        self.path = path
        self.source = LocalFile(path)

    def close(self) -> None:
        self.source.close()


class _NotNydus:
    """Stands for the RAFS v6 parts a plain EROFS image (or a stack of them, ``kind``) lacks: a command that
    needs them says so in one line."""

    def __init__(self, image: str, what: str, kind: str = "a plain EROFS image") -> None:
        self._image = image
        self._what = what
        self._kind = kind

    def __getattr__(self, name: str):
        raise UsageError(
            f"{self._image}: {self._kind} has no {self._what}: this command reads nydus layers "
            "(plain EROFS images: info, ls, cat, unpack, diff, verify, mount)"
        )


class _PackedView:
    """The packed inode's data as the sans-I/O prefix parser indexes a buffer: by byte or by slice."""

    def __init__(self, image: Erofs) -> None:
        self.image = image

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.image.packed_read(key.start, key.stop - key.start)
        return self.image.packed_read(key, 1)[0]


class Erofs(RafsV6):
    """Lazy reader of a plain EROFS image held in ``buf``: bytes, an mmap, or a view reading it where it is
    looked at (chunks.source.SourceBytes: a seekable layer's image, a remote blob), sliced and indexed only."""

    PLAIN_EROFS = True

    def __init__(self, buf, name: str = "image") -> None:
        """``name``: the image's file, for messages."""
        # Not RafsV6.__init__: there is no extended superblock, blob table or chunk table to parse.
        self.buf = buf
        self.size = len(buf)
        self.esb = erofs.parse_superblock(buf)
        self.sb = self.esb.sb
        self.ext = _NotNydus(name, "RAFS extended superblock")
        self.meta = _NotNydus(name, "RAFS blob or prefetch table")
        # Every block address of a plain image is in its own blocks (512 to 4096 bytes; RAFS v6 keeps 4096).
        self.block_size = self.esb.block_size
        self.chunk_size = self.block_size
        self.digester = _NotNydus(name, "chunk digester")
        self.compressor = _NotNydus(name, "chunk compressor")
        self._meta_off = self.sb.s_meta_blkaddr * self.block_size
        self._inodes = _LRU(65536)
        self._chunk_table = None
        self._records = None
        self._ci_source = None
        self._packed = None
        self._packed_lock = threading.Lock()
        self.prefixes: list[bytes] = []
        if erofs.long_prefixes_in_packed_inode(self.esb):
            self.prefixes = erofs.parse_long_prefixes(_PackedView(self), self.esb, self.packed_size())
        else:
            self.prefixes = erofs.parse_long_prefixes(buf, self.esb)

    @property
    def blobs(self):
        """A plain image's data is in the image itself: a command that wants a blob table says so."""
        return self.meta.blobs

    # ------------------------------------------------------------------ inodes
    def _compact_mtime(self, nid: int) -> int:
        # A compact inode keeps its mtime as 32 bits after the superblock's epoch (RAFS v6 leaves them zero).
        at = self.inode_offset(nid) + 12
        return self.esb.epoch + _U32(self.buf[at : at + 4])[0]

    def node(self, nid: int, path: bytes) -> Node:
        n = super().node(nid, path)
        if not self.inode(nid).extended:
            n.mtime = self._compact_mtime(nid)
        return n

    def attrs(self, nid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        t = super().attrs(nid)
        if not self.inode(nid).extended:
            t = (*t[:7], self._compact_mtime(nid), t[8])
        return t

    def _xattrs(self, nid: int, off: int, ino: rafs_v6.Inode) -> dict[bytes, bytes]:
        return rafs_v6.parse_xattrs(
            self.buf,
            off + ino.inode_size,
            ino.i_xattr_icount,
            nid,
            self.esb.shared_xattr_offset,
            self.prefixes,
        )

    def layout_name(self, nid: int) -> str:
        return self.inode(nid).layout_name

    # ------------------------------------------------------------------ file data
    def extents(self, node: Node) -> list[erofs.Extent]:
        """Where regular file ``node``'s bytes are in the image (None: a hole)."""
        ino = self.inode(node.nid)
        off = self.inode_offset(node.nid)
        after = off + ino.inode_size + ino.xattr_size
        layout = ino.datalayout
        if layout in (rafs_v6.LAYOUT_FLAT_PLAIN, rafs_v6.LAYOUT_FLAT_INLINE):
            return erofs.flat_extents(
                ino.i_size,
                ino.i_u,
                layout == rafs_v6.LAYOUT_FLAT_INLINE,
                after,
                self.size,
                node.nid,
                self.block_size,
            )
        if layout == rafs_v6.LAYOUT_CHUNK_BASED:
            devices = tuple(blocks for _, blocks, _ in self.esb.devices)
            return erofs.chunk_extents(
                self.buf, ino.i_size, ino.i_u & 0xFFFF, after, node.nid, self.block_size, devices
            )
        raise FormatError(
            "erofs inode",
            f"{fsdecode(node.path)}: compressed file data ({ino.layout_name} layout) has no flat extents",
            field="i_format",
            offset=off,
            value=ino.i_format,
        )

    def compressed_extents(self, node: Node) -> list[erofs_zmap.ZExtent] | None:
        """The pclusters of a compressed regular file, checked to lie in the image; None when not compressed."""
        ino = self.inode(node.nid)
        if ino.datalayout not in (erofs_zmap.LAYOUT_COMPRESSED_FULL, erofs_zmap.LAYOUT_COMPRESSED_COMPACT):
            return None
        after = self.inode_offset(node.nid) + ino.inode_size + ino.xattr_size
        try:
            out = erofs_zmap.extents(self.buf, node.nid, ino.datalayout, ino.i_size, after, self.block_size)
        except FormatError as exc:
            raise FormatError(
                exc.structure,
                f"{fsdecode(node.path)}: {exc.detail}",
                field=exc.field,
                offset=exc.offset,
                value=exc.value,
            ) from None
        for z in out:
            if z.fmt == erofs_zmap.FMT_FRAGMENT:
                if not self.esb.packed_nid or node.nid == self.esb.packed_nid:
                    raise FormatError(
                        "erofs map header",
                        f"{fsdecode(node.path)}: a fragment, but "
                        + (
                            "this is the packed inode"
                            if self.esb.packed_nid
                            else "the image has no packed inode"
                        ),
                        value=node.nid,
                    )
                continue
            if z.offset + z.stored > self.size:
                raise FormatError(
                    "erofs lcluster index",
                    f"{fsdecode(node.path)}: pcluster at file offset {z.file_offset} lies past the image",
                    offset=z.offset,
                    value=z.stored,
                )
        return out

    def chunks(self, node: Node) -> list[ChunkRef]:
        """The file's bytes as chunk references: uncompressed ones over the image and over zeros, at most
        :data:`PIECE` bytes each, and one per compressed extent (also stored in ``node.chunks``)."""
        if node.type != REG:
            return []
        out: list[ChunkRef] = []
        zs = self.compressed_extents(node)
        if zs is not None:
            for z in zs:
                if z.fmt == erofs_zmap.FMT_FRAGMENT:
                    if -(-z.length // PIECE) > MAX_PIECES:
                        raise FormatError(
                            "erofs inode",
                            f"{fsdecode(node.path)}: a fragment of {z.length} bytes is larger than this reader handles",
                            value=z.length,
                        )
                    # A range of the packed inode's data, read in pieces like the image's own blocks.
                    for pos in range(0, z.length, PIECE):
                        size = min(PIECE, z.length - pos)
                        at = z.offset + pos
                        out.append(
                            ChunkRef(
                                FRAGMENT_BLOB, len(out), z.file_offset + pos, at, size, 0, size, True, b""
                            )
                        )
                    continue
                blob = Z_BLOB + z.fmt + (Z_PARTIAL if z.partial else 0)
                # uncompressed_offset: where the extent starts in its block (interlaced extents rotate by it).
                where = z.file_offset % self.block_size
                out.append(
                    ChunkRef(blob, len(out), z.file_offset, z.offset, z.stored, where, z.length, True, b"")
                )
            node.chunks = out
            return out
        exts = self.extents(node)
        pieces = sum(-(-e.length // PIECE) for e in exts)
        if pieces > MAX_PIECES:
            raise FormatError(
                "erofs inode",
                f"{fsdecode(node.path)}: a file of {node.size} bytes is larger than this reader handles",
                field="i_size",
                offset=self.inode_offset(node.nid) + 8,
                value=node.size,
            )
        for ext in exts:
            for pos in range(0, ext.length, PIECE):
                size = min(PIECE, ext.length - pos)
                if ext.offset is None:
                    blob, where = HOLE_BLOB, 0
                elif ext.device:
                    blob, where = DEVICE_BLOB + ext.device, ext.offset + pos
                else:
                    blob, where = IMAGE_BLOB, ext.offset + pos
                out.append(
                    ChunkRef(blob, len(out), ext.file_offset + pos, where, size, where, size, False, b"")
                )
        node.chunks = out
        return out

    def packed_size(self) -> int:
        self.packed_read(0, 0)
        return self._packed[0].size

    def packed_read(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the packed inode's data from ``offset`` (where fragments are kept). Readers in
        worker threads (unpack) share its cache of decoded extents, hence the lock."""
        with self._packed_lock:
            return self._packed_read(offset, length)

    def _packed_read(self, offset: int, length: int) -> bytes:
        packed = self._packed
        if packed is None:
            nid = self.esb.packed_nid
            node = self.node(nid, b"(packed inode)")
            if node.type != REG:
                raise FormatError("erofs packed inode", "not a regular file", value=nid)
            chunks = self.chunks(node)
            if any(c.blob_index == FRAGMENT_BLOB for c in chunks):
                raise FormatError("erofs packed inode", "holds fragments itself", value=nid)
            packed = self._packed = (node, chunks, [c.file_offset for c in chunks], _LRU(8))
        node, chunks, starts, decoded = packed
        if offset + length > node.size:
            raise FormatError(
                "erofs fragment",
                f"bytes {offset}+{length} lie past the packed inode's {node.size} bytes",
                offset=offset,
                value=length,
            )
        out = bytearray()
        k = max(0, bisect.bisect_right(starts, offset) - 1)
        while len(out) < length:
            if k >= len(chunks):
                raise FormatError("erofs packed inode", "its extents end before its size", value=node.size)
            c = chunks[k]
            data = decoded.get(k)
            if data is None:
                data = self._decode_local(c)
                decoded.put(k, data)
            lo = offset + len(out) - c.file_offset
            out += data[lo : lo + length - len(out)]
            k += 1
        return bytes(out)

    def _decode_local(self, c: ChunkRef) -> bytes:
        """One chunk of the packed inode, decoded from the image buffer (no layer needed)."""
        if c.blob_index == HOLE_BLOB:
            return bytes(c.uncompressed_size)
        if blob_index_is_device(c.blob_index):
            raise FormatError("erofs packed inode", "its data lies on an extra device", value=c.blob_index)
        raw = bytes(self.buf[c.compressed_offset : c.compressed_offset + c.compressed_size])
        if c.blob_index == IMAGE_BLOB:
            return raw
        from . import erofs_codecs

        fmt, partial = (c.blob_index - Z_BLOB) % Z_PARTIAL, c.blob_index - Z_BLOB >= Z_PARTIAL
        return erofs_codecs.decode(
            raw,
            fmt,
            c.uncompressed_size,
            partial,
            c.uncompressed_offset,
            c.compressed_offset,
            self.block_size,
        )

    @property
    def chunk_table_records(self) -> int:
        return 0

    @property
    def may_have_xattrs(self) -> bool:
        return True  # no extended superblock, so no flag saying there are none

    def chunk_refs(self, node: Node) -> list[tuple[int, int]]:
        return [(c.blob_index, c.ci_index) for c in self.chunks(node)]

    def chunk_table_entries(self):
        return iter(())

    def index_chunk_table(self) -> None:
        pass

    def inode_count(self) -> int:
        return self.sb.s_inos

    def prefetch_paths(self) -> list[int]:
        return []

    def blob(self, blob_index: int, layer: Layer) -> Blob:
        """The two sources of a plain image's file data: the image itself and zeros for holes."""
        if blob_index == IMAGE_BLOB:
            return Blob(IMAGE_BLOB, layer, compressor=Compressor.NONE, digester=Digester.SHA256)
        if blob_index == HOLE_BLOB:
            return Blob(HOLE_BLOB, _HoleFile(), compressor=Compressor.NONE, digester=Digester.SHA256)
        if Z_BLOB <= blob_index < Z_BLOB + 2 * Z_PARTIAL:
            # (FRAGMENT_BLOB among them: its bytes come from packed_read, the source is never read.)
            return Blob(blob_index, layer, compressor=Compressor.NONE, digester=Digester.SHA256)
        if blob_index_is_device(blob_index) and blob_index - DEVICE_BLOB <= len(self.esb.devices):
            device = self._device(blob_index - DEVICE_BLOB, layer)
            return Blob(blob_index, device, compressor=Compressor.NONE, digester=Digester.SHA256)
        raise FormatError("erofs image", "a plain EROFS image has no blob table", value=blob_index)

    def _device(self, k: int, layer: Layer) -> _DeviceFile:
        """Extra device ``k``: the k-th file given with --blob (the file mkfs.erofs --blobdev wrote, or the
        tar a --tar=i index points into)."""
        import os

        _, blocks, _ = self.esb.devices[k - 1]
        files = layer.extra_blobs
        if len(files) < k:
            raise UsageError(
                f"{layer.path}: the image's file data lies in its blob device, extra device {k} of "
                f"{len(self.esb.devices)} (the tar a mkfs.erofs --tar=i index was made from, or the file of "
                "--blobdev); give the device files in order with --blob FILE"
            )
        path = files[k - 1]
        need = blocks * self.block_size
        if not os.path.isfile(path) or os.path.getsize(path) < need:
            raise UsageError(
                f"{path}: extra device {k} of {layer.path} must be a file of at least {need} bytes"
            )
        return _DeviceFile(path)


def blob_index_is_device(blob_index: int) -> bool:
    return blob_index > DEVICE_BLOB


def info(image: Erofs) -> dict:
    """The superblock of a plain EROFS image, for ``info``."""
    esb, sb = image.esb, image.sb
    cfgs: dict[int, dict[str, int]] = {}
    if sb.s_feature_incompat & erofs.FEATURE_INCOMPAT_BIG_PCLUSTER:
        # With compression configurations the u1 field is the bitmap of algorithms, each with its record
        # after the superblock.
        algs = [alg for alg in erofs_zmap.COMPR_CFGS if sb.s_u >> alg & 1]
        cfgs = erofs_zmap.parse_compr_cfgs(
            image.buf, erofs.SB_OFFSET + rafs_v6.SUPERBLOCK.size + 16 * sb.s_extslots, sb.s_u
        )
    elif sb.s_feature_incompat & erofs.FEATURE_INCOMPAT_LZ4_0PADDING:
        algs = [erofs_zmap.ALG_LZ4]  # lz4 alone, and u1 is its window (0: the default 64 KiB)
    else:
        algs = []
    return {
        "size": image.size,
        "block_size": esb.block_size,
        "feature_compat": f"{sb.s_feature_compat:#x}",
        "feature_compat_names": erofs.compat_names(sb.s_feature_compat),
        "feature_incompat": f"{sb.s_feature_incompat:#x}",
        "feature_incompat_names": erofs.incompat_names(sb.s_feature_incompat),
        "checksum": f"{sb.s_checksum:#010x}",
        "root_nid": sb.s_root_nid,
        "inodes": sb.s_inos,
        "blocks": sb.s_blocks,
        "meta_blkaddr": sb.s_meta_blkaddr,
        "xattr_blkaddr": sb.s_xattr_blkaddr,
        "epoch": esb.epoch,
        "build_time": esb.epoch + esb.build_time,
        "uuid": sb.s_uuid.hex(),
        "volume_name": sb.s_volume_name.rstrip(b"\0").decode("utf-8", "replace"),
        "compression_algorithms": [erofs_zmap.FORMAT_NAMES[alg] for alg in algs],
        "compression_configs": {erofs_zmap.FORMAT_NAMES[alg]: cfg for alg, cfg in cfgs.items()},
        "long_xattr_prefixes": [fsdecode(p) for p in image.prefixes],
        "packed_nid": esb.packed_nid,
        "devices": [
            {"device": k + 1, "tag": tag.decode("utf-8", "replace"), "blocks": blocks, "uniaddr": uniaddr}
            for k, (tag, blocks, uniaddr) in enumerate(esb.devices)
        ],
    }


class ErofsChunkReader(ChunkReader):
    """The chunk service of a plain EROFS image: compressed extents decode through :mod:`.erofs_codecs`."""

    def decode(self, ref: ChunkRef, verify: bool = True) -> bytes:
        if ref.blob_index < Z_BLOB or blob_index_is_device(ref.blob_index):
            return super().decode(ref, verify)
        from . import erofs_codecs

        blob = self.blob_of(ref.blob_index)
        if ref.blob_index == FRAGMENT_BLOB:
            try:
                return blob.layer.rafs.packed_read(ref.compressed_offset, ref.uncompressed_size)
            except FormatError as exc:
                raise exc.located(blob.path) from None
        fmt = (ref.blob_index - Z_BLOB) % Z_PARTIAL
        partial = ref.blob_index - Z_BLOB >= Z_PARTIAL
        try:
            raw = blob.source.pread(ref.compressed_offset, ref.compressed_size, "erofs pcluster")
            return erofs_codecs.decode(
                raw,
                fmt,
                ref.uncompressed_size,
                partial,
                ref.uncompressed_offset,
                ref.compressed_offset,
                blob.layer.rafs.block_size,
            )
        except FormatError as exc:
            raise exc.located(blob.path) from None
