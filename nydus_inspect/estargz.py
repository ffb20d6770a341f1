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

Entries that share a gzip member (``innerOffset``, a minimum chunk size) are read, not packed: their chunks
are cut from the member's output by chunks.members, which the chunk service asks for them by ``ci_index``
(:meth:`Index.placement`); a chunk record cannot say where inside a member a chunk starts, so nydus's
builder refuses such a TOC and ``pack --type estargz-ref`` does too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, replace
from functools import cached_property

from .chunks.ref import ChunkRef
from .codecs import Compressor
from .digests import Digester
from .errors import FormatError, UsageError
from .formats import blob_meta
from .formats import estargz as fmt
from .formats._struct import round_up
from .formats.rafs_v6 import BLOCK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BlobTableEntry
from .model import BLK, CHR, DIR, FIFO, REG, SYMLINK, Node

#: nydus-image's chunk size for eStargz when none is given (the estargz writer's default too).
DEFAULT_CHUNK_SIZE = 0x400000
#: The largest stored size a chunk record holds (blob.meta's v2 record has 24 bits for it).
MAX_STORED = (1 << 24) - 1

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

    @cached_property
    def members(self) -> list[fmt.Member]:
        """The data entries by gzip member (formats.estargz.group_members: checked to follow one another)."""
        return fmt.group_members(self.data_entries, self.blob_size)

    @property
    def shared(self) -> bool:
        """Whether some entry's data lies inside a gzip member after other bytes (``innerOffset``)."""
        return any(m.shared for m in self.members)

    def chunk_refs(self, blob_index: int = 0) -> list[tuple[fmt.Entry, ChunkRef]]:
        """One chunk per data entry, in TOC order, each at its own offset (duplicates included: verify reads
        every one). ``ci_index`` is the entry's position among the data entries. A chunk alone at the start of
        its member is stored as nydus's builder bounds it; one in a shared member spans the member from its
        start (all of which may have to be inflated to reach it), as far as a chunk record can say."""
        out = []
        uoff = 0
        for m in self.members:
            span = m.end - m.offset
            for e in m.entries:
                stored = min(span, MAX_STORED) if m.shared else gzip_bound(e.chunk_size, span)
                out.append(
                    (
                        e,
                        ChunkRef(
                            blob_index=blob_index,
                            ci_index=len(out),
                            file_offset=e.chunk_offset,
                            compressed_offset=e.offset,
                            compressed_size=stored,
                            uncompressed_offset=uoff,
                            uncompressed_size=e.chunk_size,
                            compressed=True,
                            digest=e.chunk_digest,
                        ),
                    )
                )
                uoff += round_up(e.chunk_size, BLOCK_SIZE)
        return out

    def placement(self) -> dict[int, tuple[fmt.Member, fmt.Entry]]:
        """For each chunk (by ``ci_index``) in a shared gzip member: that member and its TOC entry. What the
        chunk service reads such chunks by (chunks.members)."""
        out = {}
        ci = 0
        for m in self.members:
            for e in m.entries:
                if m.shared:
                    out[ci] = (m, e)
                ci += 1
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
    from .tarstream import LinkHeader, TreeBuilder, storable_xattr

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
        if any(len(part) > 255 for part in path.split(b"/")):
            # As pack refuses such a tar entry: no file system holds the name (the writer's U+FFFD for each
            # byte that is not UTF-8 can triple a name's length).
            raise FormatError(
                "estargz TOC", f"entry {e.index}: a path component is longer than 255 bytes", value=e.name
            )
        if e.type == "hardlink":
            target = b"/" + fmt.clean(e.link_name).encode("utf-8", "surrogateescape")
            # The TOC entry is the link's tar header: it bears on the inode as in a tar (tarstream decides how).
            header = LinkHeader(
                e.mode, e.uid, e.gid, e.mtime, {k: v for k, v in e.xattrs.items() if storable_xattr(k)}
            )
            try:
                tb.link(path, target, f"TOC entry {e.index}", header)
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
            # As pack does with a tar: names RAFS (and Linux) cannot hold (no namespace, macOS's) are left out.
            xattrs={k: v for k, v in e.xattrs.items() if storable_xattr(k)},
        )
        if kind == SYMLINK:
            node.target = e.link_name.encode("utf-8", "surrogateescape")
            node.size = len(node.target)
        if kind == REG:
            node.chunks = chunks_of.get(e.path, []) if e.size else []
        tb.add(node)
    return tb.finish().root, chunk_size


#: Blob-table and blob.meta features of the eStargz blob: 4K-aligned uncompressed offsets, blob.meta in a file
#: of its own (the eStargz blob has no room for it), as nydus's zran conversion of the same blob records it, and
#: v2 chunk-info records: a v1 record tells a compressed chunk by its sizes alone, and a gzip member bounded by
#: the next one can be exactly as long as its data (nydusd then reads the gzip bytes as the file's).
FEATURES = blob_meta.ALIGNED | blob_meta.SEPARATE | blob_meta.CHUNK_INFO_V2
CI_RECORD = 24


def meta_blob(index: Index) -> bytes:
    """The separate blob.meta file nydusd reads the chunk records from: the v2 chunk-info array (one record per
    TOC data entry, in ci-index order, each flagged compressed), then its 4096-byte header. nydusd finds it by
    its sha256 in the blob directory (the blob table's blob_meta_digest)."""
    array = b"".join(
        blob_meta.encode_v2(
            blob_meta.ChunkInfo(
                index=r.ci_index,
                compressed_offset=r.compressed_offset,
                compressed_size=r.compressed_size,
                uncompressed_offset=r.uncompressed_offset,
                uncompressed_size=r.uncompressed_size,
                compressed=True,
            )
        )
        for _, r in index.chunk_refs()
    )
    header = blob_meta.BlobMetaHeader(
        s_features=FEATURES,
        s_ci_compressor=Compressor.NONE.algo,
        s_ci_entries=len(array) // CI_RECORD,
        s_ci_offset=0,
        s_ci_compressed_size=len(array),
        s_ci_uncompressed_size=len(array),
    ).build()
    return array + header


def blob_entry(index: Index, blob_id: str, chunk_size: int, meta: bytes) -> BlobTableEntry:
    """The blob-table entry of the eStargz blob: gzip, sha256, its whole size as the compressed size, the chunk
    records in the separate blob.meta file ``meta``."""
    refs = index.chunk_refs()
    n = len(refs)
    return BlobTableEntry(
        blob_id=blob_id.encode(),
        blob_index=0,
        chunk_size=chunk_size,
        chunk_count=n,
        compression_algo=Compressor.GZIP.algo,
        digest_algo=Digester.SHA256.algo,
        features=FEATURES,
        compressed_size=index.blob_size,
        uncompressed_size=sum(round_up(r.uncompressed_size, BLOCK_SIZE) for _, r in refs),
        ci_compressor=Compressor.NONE.algo,
        ci_offset=0,
        ci_compressed_size=CI_RECORD * n,
        ci_uncompressed_size=CI_RECORD * n,
        blob_meta_digest=hashlib.sha256(meta).digest(),
        blob_meta_size=len(meta),
    )


def ref_bootstrap(index: Index, blob_id: str, chunk_size: int | None = None) -> tuple[bytes, bytes]:
    """(the RAFS v6 bootstrap over the eStargz blob ``blob_id`` (its sha256, as nydus names it), its separate
    blob.meta file)."""
    from .builder import build_bootstrap

    root, derived = build_tree(index)
    if chunk_size is not None and chunk_size != derived:
        raise UsageError(
            f"--chunk-size {chunk_size:#x} differs from the eStargz layer's chunk size {derived:#x}"
        )
    meta = meta_blob(index)
    blobs = [blob_entry(index, blob_id, derived, meta)] if index.data_entries else []
    boot = build_bootstrap(
        root, blobs, chunk_size=derived, compressor=Compressor.GZIP, digester=Digester.SHA256
    )
    return boot, meta


def blob_sha256(source, size: int) -> str:
    h = hashlib.sha256()
    for off in range(0, size, 4 << 20):
        h.update(source.pread(off, min(4 << 20, size - off), "estargz blob"))
    return h.hexdigest()


def summary(index: Index) -> dict:
    """What ``info`` shows of an eStargz layer."""
    files = sum(1 for e in index.toc.entries if e.type == "reg")
    return {
        "footer": "estargz" if index.footer.size == fmt.FOOTER_SIZE else "legacy stargz",
        "toc_offset": index.footer.toc_offset,
        "toc_size": len(index.toc_json),
        "toc_digest": "sha256:" + index.toc.digest.hex(),
        "entries": len(index.toc.entries),
        "files": files,
        "chunks": len(index.data_entries),
    }


def toc_entries(index: Index) -> list[dict]:
    """Each TOC entry with its blob offset and stored size (data entries: the gzip member range nydus's
    builder gives the chunk)."""
    stored = {e.index: ref.compressed_size for e, ref in index.chunk_refs()}
    out = []
    for e in index.toc.entries:
        j = e.to_json()
        if e.index in stored:
            j["stored_size"] = stored[e.index]
        out.append(j)
    return out


def pack_ref(source: str, output: str, chunk_size: int | None = None) -> dict:
    """``pack --type estargz-ref``: write to ``output`` the RAFS v6 bootstrap that references the eStargz blob
    ``source`` (named by its sha256: put the blob in a blob dir under that name for nydusd). The output is
    written to a temporary file and renamed."""
    from .chunks.source import LocalFile
    from .fsutil import atomic_output

    if not os.path.isfile(source):
        raise UsageError(f"{source}: no such file (pack --type estargz-ref takes an eStargz layer blob)")
    src = LocalFile(source)
    try:
        size = src.size
        try:
            index = read_index(src, size)
            shared = next((m for m in index.members if m.shared), None)
        except FormatError as exc:
            raise exc.located(source) from None
        if shared is not None:
            e = next((e for e in shared.entries if e.inner_offset), shared.entries[-1])
            raise UsageError(
                f"{source}: entry {e.index} ({e.name}) lies inside the gzip member at {shared.offset}, at innerOffset "
                f"{e.inner_offset} (a minimum chunk size puts small files together): an estargz-ref chunk is a "
                "whole gzip member, as nydus's stargz builder makes it (which refuses this TOC too); "
                "pack --type targz-ref indexes the blob with zran, as nydus-image create --type estargz-ref does"
            )
        blob_id = blob_sha256(src, size)
    finally:
        src.close()
    boot, meta = ref_bootstrap(index, blob_id, chunk_size)
    meta_path = None
    if index.data_entries:
        meta_path = os.path.join(os.path.dirname(os.path.abspath(output)), hashlib.sha256(meta).hexdigest())
        with atomic_output(meta_path) as f:
            f.write(meta)
    with atomic_output(output) as f:
        f.write(boot)
    return {
        "path": output,
        "blob_id": blob_id,
        "blob_meta": meta_path,
        "bootstrap_size": len(boot),
        "toc_digest": "sha256:" + index.toc.digest.hex(),
        "entries": len(index.toc.entries),
        "chunks": len(index.data_entries),
    }
