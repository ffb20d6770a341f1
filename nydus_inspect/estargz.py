"""eStargz layers read directly, and the RAFS v6 bootstrap that references one (``pack --type estargz-ref``).

An eStargz blob is opened as a layer of its own (``layer.KIND_ESTARGZ``): its TOC (formats.estargz) becomes, in
memory, the bootstrap nydus's stargz builder writes over the blob (:func:`ref_bootstrap`), whose chunks are the
blob's gzip members. So every front end (ls, cat, unpack, diff, mount, the TUI) reads it through the model and
the chunk service as it reads any nydus layer: a chunk is one gzip member range, inflated to its size and checked
against its ``chunkDigest`` (``Compressor.GZIP`` with the sha256 digester in ``chunks.decode``).

The bootstrap follows nydus's stargz builder (builder/src/stargz.rs): one chunk per TOC data entry, at the entry's
``offset``, its stored size bounded by the next entry's offset (and by gzip's worst case for its size, as
``compute_compressed_gzip_size`` does), uncompressed offsets 4 KiB aligned in TOC order, the chunk's id its
``chunkDigest``, gzip and sha256 in the blob table, the blob named by the sha256 of the eStargz blob. Where
nydus's builder gives up (empty files, chunk entries without a whole-file ``digest``, hardlinks to anything but
a regular file, mtimes it leaves at 0) this one keeps what the TOC says, so the tree equals the source tar.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, replace

from .chunks.ref import ChunkRef
from .codecs import Compressor
from .digests import Digester
from .errors import FormatError, UsageError
from .formats import estargz as fmt
from .formats._struct import round_up
from .formats.rafs_v6 import BLOCK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BlobTableEntry
from .model import BLK, CHR, DIR, FIFO, REG, SYMLINK, Node

#: nydus-image's chunk size for eStargz when none is given (the estargz writer's default too).
DEFAULT_CHUNK_SIZE = 0x400000

_TYPES = {
    "dir": (DIR, stat.S_IFDIR),
    "reg": (REG, stat.S_IFREG),
    "symlink": (SYMLINK, stat.S_IFLNK),
    "char": (CHR, stat.S_IFCHR),
    "block": (BLK, stat.S_IFBLK),
    "fifo": (FIFO, stat.S_IFIFO),
}


def gzip_bound(size: int, room: int) -> int:
    """The most bytes a gzip member holding ``size`` bytes can take, capped at ``room`` (the gap to the next
    member): nydus's compute_compressed_gzip_size."""
    return min(size + 10 + 8 + 5 + (size // (16 << 10)) * 5 + 128, room)


@dataclass
class Index:
    """An eStargz blob's footer and TOC, checked."""

    footer: fmt.Footer
    toc: fmt.Toc
    toc_json: bytes
    blob_size: int

    @property
    def data_entries(self) -> list[fmt.Entry]:
        return [e for e in self.toc.entries if e.type in ("reg", "chunk") and e.chunk_size]

    def chunk_refs(self, blob_index: int = 0) -> list[tuple[fmt.Entry, ChunkRef]]:
        """One chunk per data entry, in TOC order, each at its own offset (duplicates included: verify reads
        every one). ``ci_index`` is the entry's position among the data entries."""
        data = self.data_entries
        out = []
        uoff = 0
        for i, e in enumerate(data):
            if e.inner_offset:
                raise FormatError(
                    "estargz TOC",
                    f"entry {e.index} ({e.name}): innerOffset {e.inner_offset} (several files in one gzip member, "
                    "as --estargz-min-chunk-size writes) is not supported",
                    value=e.inner_offset,
                )
            nxt = data[i + 1].offset if i + 1 < len(data) else self.blob_size
            if nxt <= e.offset:
                raise FormatError(
                    "estargz TOC",
                    f"entry {e.index} ({e.name}): data offset {e.offset} is not before the next one ({nxt})",
                    value=e.offset,
                )
            out.append(
                (
                    e,
                    ChunkRef(
                        blob_index=blob_index,
                        ci_index=i,
                        file_offset=e.chunk_offset,
                        compressed_offset=e.offset,
                        compressed_size=gzip_bound(e.chunk_size, nxt - e.offset),
                        uncompressed_offset=uoff,
                        uncompressed_size=e.chunk_size,
                        compressed=True,
                        digest=e.chunk_digest,
                    ),
                )
            )
            uoff += round_up(e.chunk_size, BLOCK_SIZE)
        return out

    def chunk_size(self) -> int:
        """The RAFS chunk size for this TOC: the writer's (every chunk of a file but its last has it), at
        least every unchunked file's size; a power of two, as RAFS needs."""
        files: dict[str, list[fmt.Entry]] = {}
        for e in self.data_entries:
            files.setdefault(e.path, []).append(e)
        chunked = [parts[0].chunk_size for parts in files.values() if len(parts) > 1]
        size = max(chunked) if chunked else DEFAULT_CHUNK_SIZE
        biggest = max((parts[0].chunk_size for parts in files.values() if len(parts) == 1), default=0)
        want = max(size, biggest)
        size = max(MIN_CHUNK_SIZE, 1 << (want - 1).bit_length())
        if size > MAX_CHUNK_SIZE:
            raise FormatError("estargz TOC", f"a chunk of {want} bytes is over RAFS's {MAX_CHUNK_SIZE} limit")
        for path, parts in files.items():
            for e in parts[:-1]:
                if e.chunk_size != size:
                    raise FormatError(
                        "estargz TOC",
                        f"entry {e.index} ({path}): chunk of {e.chunk_size} bytes where RAFS needs {size:#x} "
                        "(chunks of one size but the last)",
                        value=e.chunk_size,
                    )
        return size


def read_index(source, size: int) -> Index:
    """Footer and TOC of the eStargz blob ``source`` (anything with ``pread(offset, size, what)``) of ``size``
    bytes; FormatError says what does not fit and where."""
    tail_len = min(size, fmt.FOOTER_SIZE)
    footer = fmt.parse_footer(source.pread(size - tail_len, tail_len, "estargz footer"), size)
    end = size - footer.size
    member = source.pread(
        footer.toc_offset, min(end - footer.toc_offset, fmt.MAX_TOC_SIZE + (1 << 20)), "estargz TOC"
    )
    toc_json = fmt.inflate_toc(member, footer.toc_offset)
    toc = fmt.parse_toc(toc_json, size, footer.toc_offset)
    return Index(footer, toc, toc_json, size)


def build_tree(index: Index, blob_index: int = 0) -> tuple[Node, int]:
    """The TOC as a Node tree with chunks (identical chunks share one record, as nydus's chunk table keys them
    by digest), and the chunk size. Landmark files are left out, as nydus's builder leaves them."""
    from .tarstream import TreeBuilder

    chunk_size = index.chunk_size()
    refs = index.chunk_refs(blob_index)
    by_digest: dict[bytes, ChunkRef] = {}
    chunks_of: dict[str, list[ChunkRef]] = {}
    for e, ref in refs:
        ref = by_digest.setdefault(ref.digest, ref)
        if ref.file_offset != e.chunk_offset:
            ref = replace(ref, file_offset=e.chunk_offset)
        chunks_of.setdefault(e.path, []).append(ref)
    tb = TreeBuilder()
    for e in index.toc.entries:
        if e.type == "chunk" or e.path in fmt.LANDMARKS:
            continue
        path = b"/" + e.path.encode("utf-8", "surrogateescape") if e.path else b"/"
        if e.type == "hardlink":
            target = b"/" + fmt.clean(e.link_name).encode("utf-8", "surrogateescape")
            try:
                tb.link(path, target, f"TOC entry {e.index}")
            except FormatError as exc:
                raise FormatError("estargz TOC", f"entry {e.index}: {exc.detail}", value=e.name) from None
            continue
        kind, fmt_bits = _TYPES[e.type]
        node = Node(
            path=path,
            type=kind,
            mode=fmt_bits | (e.mode & 0o7777),
            uid=e.uid,
            gid=e.gid,
            mtime=e.mtime,
            size=e.size if kind == REG else 0,
            rdev=os.makedev(e.dev_major, e.dev_minor) if kind in (CHR, BLK) else 0,
            xattrs=dict(e.xattrs),
        )
        if kind == SYMLINK:
            node.target = e.link_name.encode("utf-8", "surrogateescape")
            node.size = len(node.target)
        if kind == REG:
            node.chunks = chunks_of.get(e.path, []) if e.size else []
        tb.add(node)
    return tb.finish().root, chunk_size


def blob_entry(index: Index, blob_id: str, chunk_size: int) -> BlobTableEntry:
    """The blob-table entry nydus's stargz builder writes for the eStargz blob: gzip, sha256, no blob.meta
    (the chunk table holds every record)."""
    refs = index.chunk_refs()
    uniq = {r.digest: r for _, r in reversed(refs)}
    return BlobTableEntry(
        blob_id=blob_id.encode(),
        blob_index=0,
        chunk_size=chunk_size,
        chunk_count=len(refs),
        compression_algo=Compressor.GZIP.algo,
        digest_algo=Digester.SHA256.algo,
        compressed_size=max((r.compressed_offset + r.compressed_size for r in uniq.values()), default=0),
        uncompressed_size=sum(round_up(r.uncompressed_size, BLOCK_SIZE) for _, r in refs),
    )


def ref_bootstrap(index: Index, blob_id: str, chunk_size: int | None = None) -> bytes:
    """The RAFS v6 bootstrap over the eStargz blob ``blob_id`` (its sha256, as nydus names it)."""
    from .builder import build_bootstrap

    root, derived = build_tree(index)
    if chunk_size is not None and chunk_size != derived:
        raise UsageError(
            f"--chunk-size {chunk_size:#x} differs from the eStargz layer's chunk size {derived:#x}"
        )
    blobs = [blob_entry(index, blob_id, derived)] if index.data_entries else []
    return build_bootstrap(
        root, blobs, chunk_size=derived, compressor=Compressor.GZIP, digester=Digester.SHA256
    )


def blob_sha256(source, size: int) -> str:
    h = hashlib.sha256()
    for off in range(0, size, 4 << 20):
        h.update(source.pread(off, min(4 << 20, size - off), "estargz blob"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- verify
@dataclass
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def verify(layer, index: Index, toc_digest: str | None = None) -> list[Finding]:
    """Every chunk's bytes against its chunkDigest (read through the layer's chunk service), every file
    against its whole-file digest, and the TOC's sha256 against ``toc_digest`` when given. Each finding names
    the TOC entry and the blob offset."""
    from .chunks.decode import ChunkReader

    out: list[Finding] = []
    if toc_digest is not None:
        want = toc_digest.removeprefix("sha256:").lower()
        if want != index.toc.digest.hex():
            out.append(
                Finding(
                    f"TOC at offset {index.footer.toc_offset}",
                    f"sha256 {index.toc.digest.hex()} differs from the given TOC digest {want}",
                )
            )
    reader = ChunkReader(layer.blob_file)
    whole: dict[str, tuple[fmt.Entry, object, bool]] = {}
    for e, ref in index.chunk_refs():
        head = whole.get(e.path)
        if e.type == "reg":
            head = whole[e.path] = (e, hashlib.sha256(), True)
        try:
            data = reader.decode(ref)
        except FormatError as exc:
            out.append(Finding(f"TOC entry {e.index} ({e.name}, {e.type} at offset {e.offset})", exc.detail))
            if head is not None:
                whole[e.path] = (head[0], head[1], False)
            continue
        if head is not None and head[2]:
            head[1].update(data)
    for e, h, ok in whole.values():
        if ok and e.digest and h.digest() != e.digest:
            out.append(
                Finding(
                    f"TOC entry {e.index} ({e.name})",
                    f"file sha256 {h.hexdigest()} differs from its digest {e.digest.hex()}",
                )
            )
    for e in index.toc.entries:
        if e.type == "reg" and not e.size and e.digest and e.digest != hashlib.sha256(b"").digest():
            out.append(
                Finding(f"TOC entry {e.index} ({e.name})", "an empty file whose digest is not sha256('')")
            )
    return out
