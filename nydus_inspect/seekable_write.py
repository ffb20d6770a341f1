"""Write seekable EROFS layers, as containerd's converter does with ``ctr images convert --erofs-seekable``.

The layer (format in :mod:`.formats.seekable_erofs`, proposed in containerd pull request 12703) wraps a plain
EROFS image: the image is written first, by :mod:`.erofs_write`, to a temporary file beside the output; then
it is cut into chunks of ``chunk_size`` bytes, each compressed as an independent zstd frame, one chunk in
memory at a time; then the chunk table in a skippable frame; then, with dm-verity, a skippable frame holding
a verity superblock and the hash tree over the uncompressed image (:mod:`.formats.verity`). A plain zstd
decoder skips the skippable frames, so ``zstd -d`` of the layer is the image itself.

Choices follow the pull request's converter: 4 MiB chunks; zstd's default level 3 (klauspost's
``SpeedDefault``, which it uses, is meant to match it), with the content checksum that encoder writes by
default; a SHA-512 of every frame in the table; dm-verity with sha512 digests, 4096-byte blocks, no salt
(go-dmverity's default parameters) and the superblock always present, in a hash block of its own. The
descriptor annotations are the pull request's: the chunk table's offset and its SHA-512 (it has no checksum
of its own), the dm-verity frame's offset and root digest (``sha512:<hex>``). The dm-verity block size is not
annotated (readers take it from the superblock), nor is the uncompressed size (the chunk table holds it).

Where this goes beyond what the pull request writes, it stays inside what its reader accepts: each frame
also records its content size (the decoder does not need it; a reader can size its buffer from it), the
verity superblock's UUID is derived from the root hash rather than random (so the layer is a function of
its input), ``--seekable-hash none`` leaves the per-frame checksums out (hash algorithm 0, which the reader
takes), and ``--salt`` puts a salt in the superblock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass

from .erofs_write import ANNOTATION_OFFSET, ANNOTATION_ROOT_DIGEST, ErofsOptions, ErofsResult, pack_erofs_into
from .errors import FormatError, UsageError
from .formats import seekable_erofs, verity
from .formats.seekable_erofs import HASH_NONE, HASH_SHA512
from .fsutil import atomic_output

MEDIA_TYPE = "application/vnd.erofs.layer.v1+zstd"
ANNOTATION_CHUNK_TABLE_OFFSET = seekable_erofs.ANNOTATION_CHUNK_TABLE_OFFSET
ANNOTATION_CHUNK_DIGEST = seekable_erofs.ANNOTATION_CHUNK_DIGEST
#: Same keys as a plain layer's dm-verity annotations; in a seekable layer the offset is the dm-verity
#: skippable frame's (its 8-byte header), not where the hash area starts.
ANNOTATION_VERITY_OFFSET = ANNOTATION_OFFSET
ANNOTATION_VERITY_ROOT = ANNOTATION_ROOT_DIGEST

DEFAULT_CHUNK_SIZE = 4 << 20
#: Chunks are whole EROFS and dm-verity blocks, so no block of the image straddles two frames.
CHUNK_ALIGN = 4096
MAX_CHUNK = seekable_erofs.MAX_CHUNK
ZSTD_LEVEL = 3
VERITY_ALGORITHM = "sha512"
VERITY_BLOCK_SIZE = verity.DEFAULT_BLOCK_SIZE
HASH_NAMES = {"sha512": HASH_SHA512, "none": HASH_NONE}


@dataclass
class SeekableOptions:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    hash_algo: int = HASH_SHA512
    dm_verity: bool = False
    salt: bytes = b""  # go-dmverity's default parameters have none
    level: int = ZSTD_LEVEL

    def check(self) -> None:
        check_chunk_size(self.chunk_size)
        if self.hash_algo not in seekable_erofs.HASH_SIZES:
            raise UsageError(f"unknown chunk hash algorithm {self.hash_algo}")


def check_chunk_size(size: int, what: str = "--chunk-size") -> None:
    if size < CHUNK_ALIGN or size % CHUNK_ALIGN:
        raise UsageError(
            f"{what} {size}: a seekable EROFS chunk is a multiple of {CHUNK_ALIGN} bytes (4K, 64K, 4M...)"
        )
    if size > MAX_CHUNK:
        raise UsageError(f"{what} {size}: over {MAX_CHUNK >> 20}M, the largest chunk readers decode at once")


@dataclass
class SeekableResult:
    path: str
    size: int  # the whole layer file
    digest: str  # sha256 of the layer file
    uncompressed_size: int  # the EROFS image inside
    uncompressed_digest: str  # sha256 of the image inside: the layer's diff ID
    chunk_size: int
    frames: int
    hash_algo: int
    chunk_table_offset: int
    chunk_table_size: int  # its payload
    chunk_table_digest: str  # sha512 hex of the payload
    verity_offset: int | None = None  # of the dm-verity skippable frame
    verity_size: int = 0  # its payload
    root_hash: str | None = None  # hex; the digest algorithm is VERITY_ALGORITHM
    erofs: ErofsResult | None = None  # the image inside, when written here from a tar

    @property
    def diff_id(self) -> str:
        return f"sha256:{self.uncompressed_digest}"

    def annotations(self) -> dict[str, str]:
        """The layer descriptor's annotations, as the pull request's converter writes them."""
        out = {
            ANNOTATION_CHUNK_TABLE_OFFSET: str(self.chunk_table_offset),
            ANNOTATION_CHUNK_DIGEST: f"sha512:{self.chunk_table_digest}",
        }
        if self.verity_offset is not None:
            out[ANNOTATION_VERITY_OFFSET] = str(self.verity_offset)
            out[ANNOTATION_VERITY_ROOT] = f"{VERITY_ALGORITHM}:{self.root_hash}"
        return out

    def to_json(self) -> dict:
        out = {
            "path": self.path,
            "media_type": MEDIA_TYPE,
            "digest": f"sha256:{self.digest}",
            "size": self.size,
            "uncompressed_digest": self.diff_id,
            "uncompressed_size": self.uncompressed_size,
            "chunk_size": self.chunk_size,
            "frames": self.frames,
            "hash": "sha512" if self.hash_algo == HASH_SHA512 else "none",
            "chunk_table_offset": self.chunk_table_offset,
            "chunk_table_size": self.chunk_table_size,
            "annotations": self.annotations(),
        }
        if self.erofs is not None:
            e = self.erofs
            out.update(erofs_size=e.erofs_size, inodes=e.inodes, files=e.files, data_bytes=e.data_bytes)
        if self.verity_offset is not None:
            out["dm_verity"] = {
                "root_hash": self.root_hash,
                "algorithm": VERITY_ALGORITHM,
                "block_size": VERITY_BLOCK_SIZE,
                "frame_offset": self.verity_offset,
                "payload_size": self.verity_size,
            }
        return out


def pack_seekable(
    source: str, output: str, opts: SeekableOptions, erofs_opts: ErofsOptions | None = None
) -> SeekableResult:
    """The layer tar at ``source`` ('-' for stdin; plain, gzip or zstd) as a seekable EROFS layer at
    ``output``: the plain image ``pack --format erofs`` writes, framed."""
    opts.check()
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"{output}: directory {directory} does not exist")
    # The image inside is the plain one: the dm-verity payload, if any, goes in its own frame.
    inner_opts = dataclasses.replace(erofs_opts or ErofsOptions(), dm_verity=False)
    with tempfile.TemporaryFile(dir=directory) as image:
        inner = pack_erofs_into(source, image, inner_opts, directory)
        image.flush()
        with atomic_output(output) as out:
            result = frame_image(image.fileno(), inner.erofs_size, out, opts)
    result.path = output
    result.erofs = inner
    return result


def seekable_from_image(image_path: str, output: str, opts: SeekableOptions) -> SeekableResult:
    """An EROFS image file (a plain EROFS layer's blob) framed as a seekable layer at ``output``."""
    opts.check()
    with open(image_path, "rb") as f, atomic_output(output) as out:
        result = frame_image(f.fileno(), os.fstat(f.fileno()).st_size, out, opts)
    result.path = output
    return result


def frame_image(fd: int, size: int, out, opts: SeekableOptions) -> SeekableResult:
    """Write the seekable layer of the ``size``-byte image at the start of ``fd`` to the file object ``out``."""
    import zstandard

    if size <= 0:
        raise UsageError("an empty image: a seekable EROFS layer frames at least one chunk")
    chunk_size = opts.chunk_size
    count = seekable_erofs.chunk_count(size, chunk_size)
    entry = seekable_erofs.ENTRY_OFFSET.size + seekable_erofs.HASH_SIZES[opts.hash_algo]
    table_size = seekable_erofs.HEADER.size + count * entry
    params = None
    if opts.dm_verity:
        params = verity.Params(
            data_blocks=seekable_erofs.chunk_count(size, VERITY_BLOCK_SIZE),
            data_block_size=VERITY_BLOCK_SIZE,
            hash_block_size=VERITY_BLOCK_SIZE,
            algorithm=VERITY_ALGORITHM,
            salt=opts.salt,
        )
        params.check()
    # Both skippable frames state their payload size in 32 bits: refuse before writing anything.
    for what, n in (
        ("chunk table", table_size),
        ("dm-verity payload", params.hash_block_size + params.tree_size() if params else 0),
    ):
        if n > 0xFFFFFFFF:
            raise UsageError(
                f"the {what} of a {size}-byte image would be {n} bytes, over a skippable frame's 4 GiB"
            )
    # One compressor for every frame: each compress() call is a whole, independent frame.
    cctx = zstandard.ZstdCompressor(level=opts.level, write_checksum=True, write_content_size=True)
    sink = _Sink(out)
    image_sha = hashlib.sha256()
    leaves: list[bytes] = []
    entries: list[tuple[int, bytes]] = []
    for pos in range(0, size, chunk_size):
        want = min(chunk_size, size - pos)
        chunk = os.pread(fd, want, pos)
        if len(chunk) != want:
            raise FormatError("EROFS image", "ends early", offset=pos + len(chunk), value=size)
        image_sha.update(chunk)
        if params is not None:
            # A last block short of 4096 bytes is hashed zero-padded, as the device rounded up reads it.
            leaves.extend(verity.data_digests(params, chunk))
        frame = cctx.compress(chunk)
        del chunk
        checksum = hashlib.sha512(frame).digest() if opts.hash_algo == HASH_SHA512 else b""
        entries.append((sink.size, checksum))
        sink.write(frame)
    payload = seekable_erofs.table_payload(size, chunk_size, opts.hash_algo, entries)
    result = SeekableResult(
        path="",
        size=0,
        digest="",
        uncompressed_size=size,
        uncompressed_digest=image_sha.hexdigest(),
        chunk_size=chunk_size,
        frames=count,
        hash_algo=opts.hash_algo,
        chunk_table_offset=sink.size,
        chunk_table_size=len(payload),
        chunk_table_digest=seekable_erofs.table_digest(payload).hex(),
    )
    sink.write(seekable_erofs.skippable_header(len(payload)))
    sink.write(payload)
    if params is not None:
        root, tree = verity.build_tree(params, leaves)
        del leaves
        sb = verity.Superblock(params, verity.uuid_for(root)).build(params.hash_block_size)
        result.verity_offset = sink.size
        result.verity_size = len(sb) + len(tree)
        result.root_hash = root.hex()
        sink.write(seekable_erofs.skippable_header(result.verity_size))
        sink.write(sb)
        sink.write(tree)
    result.size = sink.size
    result.digest = sink.sha.hexdigest()
    return result


class _Sink:
    """The output, counted and hashed (sha256: the layer's digest) as it is written."""

    def __init__(self, out) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
