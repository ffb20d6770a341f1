"""Fuzz targets, one per parser: each takes bytes and must end in success or FormatError/UsageError.

Used by the short-budget test (tests/test_fuzz_targets.py) and by the long atheris runs
(tests/fuzz/run_atheris.py). Every target bounds its own work (nodes walked, chunks read), so a
hang or a large allocation is a parser bug, not a target artefact.
"""

from __future__ import annotations

import os
import tarfile
import tempfile

from nydus_inspect.errors import FormatError, UsageError
from nydus_inspect.formats import blob_meta, rafs_v5, rafs_v6, tar_header, toc
from nydus_inspect.model import REG, RafsV6

EXPECTED = (FormatError, UsageError)
MAX_NODES = 2000


def fuzz_tar_header(data: bytes) -> None:
    try:
        tar_header.parse(data[:512])
    except EXPECTED:
        pass


def fuzz_toc(data: bytes) -> None:
    try:
        for entry in toc.parse(data[: len(data) // 128 * 128]):
            entry.build()
    except EXPECTED:
        pass


def fuzz_blob_meta(data: bytes) -> None:
    try:
        hdr = blob_meta.BlobMetaHeader.parse(data[-blob_meta.HEADER_SIZE :] if len(data) >= 4096 else data)
        body = data[: max(0, len(data) - blob_meta.HEADER_SIZE)]
        arr = blob_meta.ChunkInfoArray(
            body, min(hdr.s_ci_entries, 10_000), bool(hdr.s_features & blob_meta.CHUNK_INFO_V2)
        )
        for ci in arr:
            ci.to_json()
        count = min(hdr.s_ci_zran_count, 10_000)
        if hdr.s_features & blob_meta.ZRAN:
            # A targz-ref blob's zran table (its contexts and windows) is where a batch blob's records are.
            from nydus_inspect.formats import zran

            zran.parse_table(body, hdr.s_ci_zran_offset, hdr.s_ci_zran_size, count)
        else:
            # A batch blob's batch records, where the header says (chunks.variants reads them so).
            blob_meta.parse_batch_contexts(body, hdr.s_ci_zran_offset, count)
    except EXPECTED:
        pass


def fuzz_zran(data: bytes) -> None:
    """A targz-ref zran table (the first 8 bytes: its size and context count), then the contexts inflated
    against the rest as the gzip (those of at most 1 MiB of output)."""
    from nydus_inspect.formats import zran

    if len(data) < 8:
        return
    size, count = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")
    try:
        ctxs = zran.parse_table(data, 8, size, count)
        gz = data[8 + size :]
        for ctx in ctxs[:16]:
            zran.check_in_file(ctx, len(gz))
            if ctx.out_len <= 1 << 20:
                off, n = zran.input_range(ctx, len(gz))
                zran.inflate(ctx, gz[off : off + n])
    except EXPECTED:
        pass


def _zran_seed() -> bytes:
    """A zran table of two contexts over a raw deflate stream: one from its start, one resuming mid-byte."""
    import zlib

    from nydus_inspect.formats import zran

    data = b"nydus zran seed " * 500
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = c.compress(data) + c.flush()
    ctxs = [
        zran.ZranContext(0, 0, 0, 0, len(stream), len(data), 0, 0, 0, b""),
        zran.ZranContext(1, 1, 0, 0, len(stream) - 1, 100, 64, stream[0], 3, data[:64]),
    ]
    table = zran.build_table(ctxs)
    return len(table).to_bytes(4, "little") + len(ctxs).to_bytes(4, "little") + table + stream


#: Output the targz-ref target lets one input inflate (the gzip's own and its layer's reads, each).
TARGZ_MAX_OUT = 1 << 20


def _resealed_gzip(data: bytes) -> bytes | None:
    """A one-member gzip whose deflate data inflates, with its CRC and length set again to what it inflates
    to (as the erofs target sets its checksum): mutations of the deflate blocks then get past the gzip's
    trailer check into the indexer's block and window walk. None when there is nothing to reseal."""
    import zlib

    if len(data) < 18 or data[:4] != b"\x1f\x8b\x08\x00":  # no optional header fields: the data is at 10
        return None
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data[10:], TARGZ_MAX_OUT)
    except zlib.error:
        return None
    if not d.eof:
        return None
    end = len(data) - len(d.unused_data)
    trailer = zlib.crc32(out).to_bytes(4, "little") + (len(out) & 0xFFFFFFFF).to_bytes(4, "little")
    fixed = data[:end] + trailer
    return None if fixed == data[: end + 8] else fixed


def _inflates_within(data: bytes, limit: int) -> bool:
    """Whether the gzip members of ``data`` inflate to at most ``limit`` bytes before they end or fail: 64 KiB
    of deflate can stand for 64 MiB, which pack would rightly spend seconds on."""
    import zlib

    total, rest = 0, data
    while rest:
        d = zlib.decompressobj(31)
        try:
            total += len(d.decompress(rest, limit + 1 - total))
        except zlib.error:
            return True
        if total > limit or d.unconsumed_tail or not d.eof:
            return total <= limit and not d.unconsumed_tail
        rest = d.unused_data.lstrip(b"\0")
    return True


def fuzz_targz_ref(data: bytes) -> None:
    """``pack --type targz-ref`` over a .tar.gz: the gzip walked block by block (zran contexts: bit positions
    and windows at deflate block boundaries, across members), the tar read from it, the bootstrap and
    blob.meta built; then the layer that makes read back through those contexts with the gzip as its blob.
    Once as given and once resealed (:func:`_resealed_gzip`); 4 KiB chunks, so that contexts are used."""
    from nydus_inspect import targz
    from nydus_inspect.layer import open_layer

    for gz in (data, _resealed_gzip(data)):
        if gz is None or not _inflates_within(gz, TARGZ_MAX_OUT):
            continue
        path = _scratch_file("targz", gz)
        try:
            ref = targz.build(path, 0x1000, inline=True)
        except EXPECTED:
            continue
        meta = _scratch_file("targz-meta", ref.meta)
        try:
            with open_layer(meta, blobs=[path]) as layer:
                budget = TARGZ_MAX_OUT
                for i, node in enumerate(layer.rafs.walk()):
                    if i >= MAX_NODES or budget <= 0:
                        break
                    if node.type == REG:
                        for piece in layer.read_file(node):
                            budget -= len(piece)
        except EXPECTED:
            pass


def _targz_seeds() -> list[bytes]:
    """Small real .tar.gz layers: one member at level 6, one of stored blocks (level 0: the mutations a
    bit flip makes inside them keep the stream inflatable), and two members."""
    import gzip
    import sys

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import hostile

    tar = hostile.small_tar()
    half = len(tar) // 1024 * 512
    small = b"".join(
        [
            hostile.member(b"d/", typeflag=b"5", mode=0o755),
            hostile.member(b"d/a", hostile.text("a", 6_000)),
            hostile.member(b"d/b", hostile.seeded_bytes("b", 5_000)),
        ]
    )
    return [
        gzip.compress(tar, 6, mtime=0),
        gzip.compress(small + hostile.END, 0, mtime=0),
        gzip.compress(tar[:half], 6, mtime=0) + gzip.compress(tar[half:], 1, mtime=0),
    ]


def fuzz_rafs_v6(data: bytes) -> None:
    try:
        r = RafsV6(data)
        for i, node in enumerate(r.walk()):
            if i >= MAX_NODES:
                break
            node.to_json()
            if node.type == REG:
                r.chunks(node)
        for i, _ in enumerate(r.chunk_table_entries()):
            if i >= MAX_NODES:
                break
    except EXPECTED:
        pass


def fuzz_rafs_v5(data: bytes) -> None:
    try:
        r = rafs_v5.RafsV5(data)
        r.blob_ids()
        for i, _ in enumerate(r.walk()):
            if i >= MAX_NODES:
                break
    except EXPECTED:
        pass


def fuzz_rafs_v5_model(data: bytes) -> None:
    """The v5 bootstrap as every reader sees it: the model's walk, xattrs, directory listings and chunks."""
    from nydus_inspect.model_v5 import RafsV5Model

    try:
        r = RafsV5Model(data)
        for i, node in enumerate(r.walk()):
            if i >= MAX_NODES:
                break
            node.to_json()
            r.attrs(node.nid)
            if node.type == "dir":
                r.dir_entries(node.nid)
            if node.type == REG:
                r.chunks(node)
        r.prefetch_paths()
    except EXPECTED:
        pass


def fuzz_dir_block(data: bytes) -> None:
    try:
        rafs_v6.parse_dir_block(data[:4096], 0, 128)
    except EXPECTED:
        pass


_SCRATCH: dict[str, str] = {}
_SCRATCH_DIR: list[str] = []


def scratch_dir() -> str:
    """This process's scratch directory (in /dev/shm when there is one), removed at exit; or the one
    NYDUS_FUZZ_SCRATCH names (the atheris runner's, which libFuzzer's exit would leave behind)."""
    if not _SCRATCH_DIR:
        given = os.environ.get("NYDUS_FUZZ_SCRATCH")
        if given:
            _SCRATCH_DIR.append(given)
        else:
            import atexit
            import shutil

            base = "/dev/shm" if os.path.isdir("/dev/shm") else None
            _SCRATCH_DIR.append(tempfile.mkdtemp(prefix="nydus-fuzz-", dir=base))
            atexit.register(shutil.rmtree, _SCRATCH_DIR[0], True)
    return _SCRATCH_DIR[0]


def _scratch_file(kind: str, data: bytes) -> str:
    """``data`` written to this target's one scratch file, alone in a directory of its own: a reader looks
    for a bootstrap's blobs beside it, and by content, so it must find no other input there."""
    path = _SCRATCH.get(kind)
    if path is None:
        where = os.path.join(scratch_dir(), kind)
        os.makedirs(where, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"nydus-fuzz-{kind}-", dir=where)
        os.close(fd)
        _SCRATCH[kind] = path
    with open(path, "wb") as f:
        f.write(data)
    return path


#: An input of the layer target that starts so holds two files: a layer (its length in the 4 bytes after
#: this) and then the one blob it reads its data from (given as ``--blob``): a bootstrap and the tar of a tarfs
#: layer, the meta blob of a targz-ref layer and its .tar.gz, an old bootstrap and its data blob.
PAIR = b"nydus-fuzz-pair\0"


def pair(layer: bytes, blob: bytes) -> bytes:
    return PAIR + len(layer).to_bytes(4, "little") + layer + blob


def fuzz_layer(data: bytes) -> None:
    """The whole reading path on a file: sniff, ToC, entries, bootstrap, listing, chunk reads (with the
    blob of a :data:`PAIR` input)."""
    from nydus_inspect import query
    from nydus_inspect.layer import open_layer

    blobs = None
    if data.startswith(PAIR) and len(data) >= len(PAIR) + 4:
        n = int.from_bytes(data[len(PAIR) : len(PAIR) + 4], "little")
        start = len(PAIR) + 4
        blobs = [_scratch_file("layer-blob", data[start + n :])]
        data = data[start : start + n]
    path = _scratch_file("layer", data)
    try:
        with open_layer(path, blobs=blobs) as layer:
            query.info(layer)
            if layer.toc is not None or layer.kind == "nydus-blob-no-toc":
                query.toc_report(layer)
                for name in layer.entry_names():
                    layer.entry(name)
            if layer.has_bootstrap:
                for i, node in enumerate(query.list_nodes(layer, "/", recursive=True)):
                    if i >= MAX_NODES:
                        break
                    if node.type == REG and not layer.is_v5:
                        for _ in layer.read_file(node):
                            pass
    except EXPECTED:
        pass


def fuzz_layer_tar(data: bytes) -> None:
    """The OCI layer tar reader pack and diff use: headers, PAX records, GNU long names, the tree;
    once from a byte stream and once from a (mapped) plain file."""
    import io

    from nydus_inspect.tarstream import read_tar

    path = _scratch_file("tar", data)

    def consume(node, fobj, ref) -> None:
        while fobj.read(1 << 16):
            pass

    for opener in (lambda: io.BufferedReader(io.BytesIO(data)), lambda: open(path, "rb")):  # noqa: SIM115
        stream = opener()
        try:
            read_tar(stream, consume, "fuzz")
        except EXPECTED:
            pass
        finally:
            stream.close()


MOUNT_READ_BYTES = 4 << 20  # bytes one input may have read through the handlers, in all
MOUNT_MAX_NAME = 255


class _Finding(AssertionError):
    """What a mount handler must never do (a crash of the target, for libFuzzer)."""


def _check_attr(e, what: str, placeholder_ok: bool = False) -> None:
    """An attribute reply the kernel takes (the pyfuse3 setters have range-checked every field already)."""
    import stat as st

    from nydus_inspect.mount.fs import KERNEL_TYPES, MAX_OFF

    if placeholder_ok and e.entry_timeout == 0 and e.attr_timeout == 0:
        return  # an inode listed without attributes: the kernel asks again, and gets EIO
    if st.S_IFMT(e.st_mode) not in KERNEL_TYPES:
        raise _Finding(f"{what}: mode {e.st_mode:#o} has no file type the kernel knows")
    if not 0 <= e.st_size <= MAX_OFF or e.st_ino <= 0:
        raise _Finding(f"{what}: size {e.st_size}, inode {e.st_ino}")


def _mount_fs(path: str):
    """A NydusFS over the layer at ``path``, as the mount daemon makes it (no page-cache feeding: no kernel)."""
    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    sources = open_sources([path])
    try:
        fs = NydusFS(sources, cache_size=8 << 20, workers=1, page_cache=False)
    except BaseException:
        sources.close()
        raise

    def internal(handler, args, exc):
        raise _Finding(f"{handler}{args[:2]}: internal error: {type(exc).__name__}: {exc}") from exc

    fs._internal = internal  # an error no check foresaw becomes EIO in the daemon: here it is a finding
    return sources, fs


def _same_as_reader(fs, nid: int, data: bytes) -> None:
    """A file read whole through the mount holds the bytes the checked reader (``cat``) gives, and the reader
    does not refuse it."""
    from nydus_inspect.errors import NydusInspectError

    layer = fs.sources.layers[0]
    try:
        want = b"".join(layer.read_file(layer.rafs.node(nid, b"")))
    except NydusInspectError as exc:
        raise _Finding(f"read {nid}: {len(data)} bytes served, the reader refuses the file: {exc}") from None
    if want != data:
        raise _Finding(f"read {nid}: {len(data)} bytes served differ from the reader's {len(want)}")


async def _drive_mount(fs) -> None:
    """Every request handler on every inode reachable from the mount root: lookup, getattr, opendir and
    readdir (in small batches), open and read (whole, and at odd offsets), readlink, listxattr, getxattr,
    statfs. A FUSEError is an answer; anything else, or a reply the kernel would refuse, is a finding."""
    import pyfuse3

    from nydus_inspect.mount.entries import ROOT_INODE

    budget = MOUNT_READ_BYTES
    todo, seen = [ROOT_INODE], {ROOT_INODE}

    async def answer(coro, what):
        try:
            return await coro
        except pyfuse3.FUSEError as exc:
            if not isinstance(exc.errno, int) or exc.errno <= 0:
                raise _Finding(f"{what}: errno {exc.errno!r}") from None
            return None

    s = await fs.statfs(None)
    if not (0 <= s.f_files < 1 << 64 and 0 <= s.f_blocks * s.f_frsize < 1 << 64):
        raise _Finding(f"statfs: {s.f_files} files, {s.f_blocks} blocks")
    await answer(fs.lookup(ROOT_INODE, b"no-such-name"), "lookup")
    while todo and len(seen) < MAX_NODES:
        ino = todo.pop()
        attr = await answer(fs.getattr(ino), f"getattr {ino}")
        if attr is None:
            continue
        _check_attr(attr, f"getattr {ino}")
        for name in (await answer(fs.listxattr(ino), f"listxattr {ino}") or [])[:16] + [b"security.selinux"]:
            if b"\0" in name:
                raise _Finding(f"listxattr {ino}: a name with a NUL")
            await answer(fs.getxattr(ino, name), f"getxattr {ino}")
        kind = attr.st_mode & 0o170000
        if kind == 0o120000:
            target = await answer(fs.readlink(ino), f"readlink {ino}")
            if target is not None and (not target or b"\0" in target):
                raise _Finding(f"readlink {ino}: {target[:40]!r}")
        elif kind == 0o100000:
            fh = await answer(fs.open(ino, os.O_RDONLY), f"open {ino}")
            if fh is None:
                continue
            off, got = 0, []
            while budget > 0:
                data = await answer(fs.read(fh.fh, off, 128 << 10), f"read {ino}")
                if data is None:
                    got = None
                    break
                if len(data) > 128 << 10:
                    raise _Finding(f"read {ino}: {len(data)} bytes for 128 KiB asked")
                if not data:
                    size = attr.st_size
                    if off != size:
                        # An entries/ file whose size is known once it is made (chunks.json) shows 0 until
                        # then, and this read (or a getxattr of its sha256 before) made it: the end is
                        # checked against a stat taken now. Any other file's size never changes.
                        after = await answer(fs.getattr(ino), f"getattr {ino} after read")
                        size = after.st_size if after is not None else size
                    if off != size:
                        raise _Finding(f"read {ino}: the end at {off}, size {size}")
                    if ino not in fs.vnodes:
                        _same_as_reader(fs, ino, b"".join(got))
                    break
                budget -= len(data)
                off += len(data)
                got.append(bytes(data))
            await answer(fs.read(fh.fh, max(0, attr.st_size - 7), 4099), f"read {ino} tail")
            await fs.release(fh.fh)
        elif kind == 0o040000:
            fh = await answer(fs.opendir(ino, None), f"opendir {ino}")
            if fh is None:
                continue
            entries: list = []
            start = 0
            for _ in range(MAX_NODES):  # in batches of 4, as from a small buffer: the kernel asks again
                batch: list = []

                def reply(token, name, a, next_id, batch=batch, ino=ino):
                    if len(batch) == 4:
                        return False
                    if not name or b"\0" in name or b"/" in name or len(name) > MOUNT_MAX_NAME:
                        raise _Finding(f"readdir {ino}: name {name[:40]!r}")
                    _check_attr(a, f"readdir {ino} {name[:40]!r}", placeholder_ok=True)
                    batch.append((name, a.st_ino, next_id))
                    return True

                real, pyfuse3.readdir_reply = pyfuse3.readdir_reply, reply
                try:
                    await answer(fs.readdir(fh, start, None), f"readdir {ino}")
                finally:
                    pyfuse3.readdir_reply = real
                entries += batch
                if len(batch) < 4:
                    break
                start = batch[-1][2]
            await fs.releasedir(fh)
            for name, child, _ in entries:
                if name in (b".", b".."):
                    continue
                looked = await answer(fs.lookup(ino, name), f"lookup {ino} {name[:40]!r}")
                if looked is not None:
                    _check_attr(looked, f"lookup {ino} {name[:40]!r}")
                    if looked.st_ino != child:
                        raise _Finding(
                            f"lookup {ino} {name[:40]!r}: inode {looked.st_ino}, listed as {child}"
                        )
                if child not in seen and child > 0:
                    seen.add(child)
                    todo.append(child)


def fuzz_mount(data: bytes) -> None:
    """The mount's request handlers (pyfuse3 Operations, no kernel) over a layer or bootstrap: every handler
    on every reachable inode, driven by trio."""
    import trio

    from nydus_inspect.mount.fs import log

    # The handlers log every EIO, which the fuzzer needs none of; the logger is put back as it was, for the
    # tests that run this target in their own process and read the mount's log lines afterwards.
    was, log.disabled = log.disabled, True
    try:
        path = _scratch_file("mount", data)
        try:
            sources, fs = _mount_fs(path)
        except EXPECTED:
            return

        async def main() -> None:
            fs.attach()
            try:
                await _drive_mount(fs)
            finally:
                fs.detach()

        try:
            trio.run(main)
        finally:
            sources.close()
    finally:
        log.disabled = was


def fuzz_erofs(data: bytes) -> None:
    """A plain EROFS image in memory: superblock, inodes, xattrs, directories, block maps, compressed
    indexes, and each pcluster decoded (at most MAX_NODES extents)."""
    from nydus_inspect import erofs_codecs
    from nydus_inspect.erofs import FRAGMENT_BLOB, Z_BLOB, Z_PARTIAL, Erofs, blob_index_is_device
    from nydus_inspect.formats import erofs

    if len(data) >= 1152 and data[1032] & erofs.FEATURE_COMPAT_SB_CHKSUM:
        # Most mutations land in the first block, which the superblock checksum covers: set it again so that
        # they reach the inodes and indexes there (a wrong checksum has its own test).
        fixed = bytearray(data)
        fixed[1028:1032] = erofs.sb_checksum(fixed).to_bytes(4, "little")
        data = bytes(fixed)
    try:
        r = Erofs(data)
        decoded = 0
        for i, node in enumerate(r.walk()):
            if i >= MAX_NODES:
                break
            node.to_json()
            if node.type != REG:
                continue
            for c in r.chunks(node):
                if c.blob_index < Z_BLOB or blob_index_is_device(c.blob_index) or decoded >= MAX_NODES:
                    continue  # (an extra device's data, a --tar=i index's tar, is not in the image)
                decoded += 1
                if c.blob_index == FRAGMENT_BLOB:
                    r.packed_read(c.compressed_offset, c.uncompressed_size)
                    continue
                fmt, partial = (c.blob_index - Z_BLOB) % Z_PARTIAL, c.blob_index - Z_BLOB >= Z_PARTIAL
                raw = data[c.compressed_offset : c.compressed_offset + c.compressed_size]
                erofs_codecs.decode(
                    raw, fmt, c.uncompressed_size, partial, c.uncompressed_offset, 0, r.block_size
                )
    except EXPECTED:
        pass


def fuzz_estargz(data: bytes) -> None:
    """An eStargz blob: footer, TOC member, TOC JSON, the bootstrap made from it, and the first chunks that
    share a gzip member (innerOffset), cut from the member's output as the chunk service cuts them."""
    from nydus_inspect.chunks.members import SharedMembers
    from nydus_inspect.estargz import read_index, ref_bootstrap

    class _Bytes:
        def pread(self, offset: int, size: int, what: str = "data") -> bytes:
            if offset < 0 or size < 0 or offset + size > len(data):
                raise FormatError(what, "range outside the input", offset=offset)
            return data[offset : offset + size]

    try:
        index = read_index(_Bytes(), len(data))
        if len(index.toc.entries) <= MAX_NODES:
            ref_bootstrap(index, "0" * 64)
            members = SharedMembers(_Bytes(), index.placement())
            for _, (member, entry) in list(members.placement.items())[:8]:
                try:
                    members.read(member, entry.inner_offset, entry.chunk_size)
                except FormatError:
                    pass  # each chunk on its own: a bad one must not hide the next
    except EXPECTED:
        pass


def fuzz_seekable(data: bytes) -> None:
    """A seekable EROFS layer: the zstd frame walk, the chunk table, the dm-verity frame, and the first
    frames decoded and checked as every reader gets them."""
    from nydus_inspect.seekable import SeekableErofs

    path = _scratch_file("seekable", data)
    try:
        src = SeekableErofs(path)
    except EXPECTED:
        return
    try:
        src.table.to_json()
        place = src.verity_payload()
        if place is not None:
            src.stored(place[0], min(place[1], 512), "dm-verity payload")
        for k in range(min(3, len(src.table.frames))):
            if src.table.frames[k].uncompressed_size <= 1 << 20:
                src.frame(k)
    except EXPECTED:
        pass
    finally:
        src.close()


def fuzz_verity(data: bytes) -> None:
    """A dm-verity payload (superblock, then the hash tree) checked against data of zeros, as verify checks
    one after an EROFS image (trees over at most 256 data blocks)."""
    from nydus_inspect.formats import verity
    from nydus_inspect.formats._struct import round_up

    try:
        params = verity.Superblock.parse(data).params
        if params.data_blocks > 256:
            return
        start = round_up(verity.SUPERBLOCK_SIZE, params.hash_block_size)
        tree = data[start : start + params.tree_size()]
        if len(tree) != params.tree_size():
            return
        zero = params.digest(bytes(params.data_block_size))
        leaves = [zero] * params.data_blocks
        if params.data_blocks == 1:
            root = leaves[0]
        else:
            top = params.levels()[-1][0] * params.hash_block_size
            root = params.digest(tree[top : top + params.hash_block_size])
        verity.check_tree(params, leaves, tree, root)
    except EXPECTED:
        pass


TARGETS = {
    "erofs": fuzz_erofs,
    "tar_header": fuzz_tar_header,
    "layer_tar": fuzz_layer_tar,
    "toc": fuzz_toc,
    "blob_meta": fuzz_blob_meta,
    "rafs_v6": fuzz_rafs_v6,
    "rafs_v5": fuzz_rafs_v5,
    "rafs_v5_model": fuzz_rafs_v5_model,
    "dir_block": fuzz_dir_block,
    "layer": fuzz_layer,
    "mount": fuzz_mount,
    "zran": fuzz_zran,
    "targz_ref": fuzz_targz_ref,
    "estargz": fuzz_estargz,
    "seekable": fuzz_seekable,
    "verity": fuzz_verity,
}


def seeds(vectors: str) -> dict[str, list[bytes]]:
    """Seed inputs per target, cut from the real vectors."""

    def read(rel: str) -> bytes:
        with open(os.path.join(vectors, rel), "rb") as f:
            return f.read()

    toc_blob = read("nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca")
    data_blob = read("nydus/blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef")
    boot = read("nydus/bootstrap/rafs-v6-2.2.boot")
    v5 = read("nydus/repeatable/sha256-nocompress-repeatable")
    import zstandard

    inline_boot = zstandard.ZstdDecompressor().decompress(toc_blob[7997 : 7997 + 501])
    erofs_images = [boot] + _erofs_seeds()
    variants = _variant_seeds()
    return {
        "erofs": erofs_images,
        "tar_header": [toc_blob[-512:], data_blob[-512:], toc_blob[2829 : 2829 + 512]],
        "layer_tar": [
            read("nydus/tar/" + name)
            for name in sorted(os.listdir(os.path.join(vectors, "nydus/tar")))
            if os.path.getsize(os.path.join(vectors, "nydus/tar", name)) < 1 << 20
        ][:4],
        "toc": [toc_blob[9010:9522], data_blob[13530 - 512 : 13530]],
        "blob_meta": [toc_blob[3341:7485], data_blob[8314:12442], *variants["blob_meta"]],
        "rafs_v6": [boot, inline_boot],
        "rafs_v5": [v5],
        "rafs_v5_model": [v5],
        "dir_block": [boot[8192 + 4096 : 8192 + 8192]],
        "layer": [toc_blob, data_blob, boot, v5, *erofs_images[1:2], *variants["layer"]],
        "mount": [toc_blob, *_mount_seeds(), *variants["mount"]],
        "zran": [_zran_seed(), *variants["zran"]],
        "targz_ref": _targz_seeds(),
        "estargz": _estargz_seeds(read("nydus/stargz/estargz_sample.json")),
        "seekable": _seekable_seeds(erofs_images),
        "verity": _verity_seeds(),
    }


_VARIANTS: dict[str, dict[str, list[bytes]]] = {}


def _variant_seeds() -> dict[str, list[bytes]]:
    """Seeds of the layer kinds nydus-image writes besides a plain tar-rafs blob, made by the real
    nydus-image (when `make oracle` has built it) from a small tar and its gzip, per target:

    - ``layer``: inline blobs (``--blob-inline-meta --features blob-toc``) with batch chunks, encrypted, and
      both (decrypt and padding, batch decode); pairs (:data:`PAIR`) of a tarfs bootstrap and its tar, a
      targz-ref meta blob and its gzip, an old v6 bootstrap (no chunk table) and its no-ToC data blob, the
      bootstrap of external files and the file holding them; and the old data blob alone (its blob.meta
      header ends it).
    - ``blob_meta``: the decoded blob.meta and header of the batch blob (batch records after the chunk info)
      and of the targz-ref layer (chunk info v2, the zran table after it).
    - ``zran``: the targz-ref layer's zran table over its gzip.
    - ``mount``: the inline blobs (the mount takes one layer file).

    Built once per process; every file is small (the fuzzer's -max_len is 64 KiB)."""
    if _VARIANTS:
        return _VARIANTS
    import gzip
    import subprocess
    import sys

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import hostile

    from nydus_inspect.formats import blob_meta as bm
    from nydus_inspect.layer import open_layer
    from oracle import find_oracle

    out: dict[str, list[bytes]] = {"layer": [], "blob_meta": [], "zran": [], "mount": []}
    where = find_oracle()
    if where is None:
        _VARIANTS.update(out)
        return out
    # Files of 1 byte to 9 KB: chunks under half the batch size (batched), data under 16 bytes (padded when
    # encrypted), a hard link; about 20 KB of tar.
    members = [hostile.member(b"a/", typeflag=b"5", mode=0o755)]
    for i, n in enumerate((1, 15, 17, 700, 3000, 9000, 5, 16)):
        members.append(
            hostile.member(b"a/f%d" % i, (hostile.text(f"f{i}", n) + hostile.seeded_bytes("x", n))[:n])
        )
    members.append(hostile.member(b"a/link", typeflag=b"1", linkname=b"a/f5"))
    tar = b"".join(members) + hostile.END
    gz = gzip.compress(tar, 6, mtime=0)

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def create(work: str, *opts: str, source: str) -> None:
        subprocess.run(
            [str(where / "nydus-image"), "create", "--log-level", "warn", *opts, source],
            check=True,
            capture_output=True,
            timeout=120,
        )

    inline = ("--type", "tar-rafs", "--blob-inline-meta", "--features", "blob-toc")
    with tempfile.TemporaryDirectory() as tmp:
        src, gz_path = os.path.join(tmp, "src.tar"), os.path.join(tmp, "src.tar.gz")
        with open(src, "wb") as f:
            f.write(tar)
        with open(gz_path, "wb") as f:
            f.write(gz)
        for name, opts in (
            ("batch", ("--batch-size", "0x10000", "--compressor", "zstd")),
            ("encrypted", ("--encrypt",)),
            ("encrypted-batch", ("--encrypt", "--batch-size", "0x10000")),
        ):
            blob = os.path.join(tmp, name + ".blob")
            create(tmp, *inline, *opts, "--blob", blob, source=src)
            out["layer"].append(read(blob))
            out["mount"].append(read(blob))
            if name == "batch":
                with open_layer(blob) as layer:
                    out["blob_meta"].append(layer.entry("blob.meta") + layer.entry("blob.meta.header"))
        # targz-ref, as the snapshotter makes it: a meta blob; the data stays in the gzip.
        meta = os.path.join(tmp, "ref.meta")
        ref = (
            "--type",
            "targz-ref",
            "--blob-inline-meta",
            "--features",
            "blob-toc",
            "--chunk-size",
            "0x1000",
        )
        create(tmp, *ref, "--blob", meta, source=gz_path)
        out["layer"].append(pair(read(meta), gz))
        with open_layer(meta, blobs=[gz_path]) as layer:
            area, header = layer.entry("blob.meta"), layer.entry("blob.meta.header")
        out["blob_meta"].append(area + header)
        hdr = bm.BlobMetaHeader.parse(header)
        table = area[hdr.s_ci_zran_offset : hdr.s_ci_zran_offset + hdr.s_ci_zran_size]
        out["zran"].append(
            len(table).to_bytes(4, "little") + hdr.s_ci_zran_count.to_bytes(4, "little") + table + gz
        )
        # tarfs: 512-byte blocks, and the blob is the tar itself.
        boot = os.path.join(tmp, "tarfs.boot")
        create(tmp, "--type", "tar-tarfs", "--bootstrap", boot, "--blob-dir", tmp, source=src)
        out["layer"].append(pair(read(boot), tar))
        # An old v6 data blob (chunks, chunk info, its header; no tar headers, no ToC), and its bootstrap
        # without chunk-table records, as a 2022 builder left it: chunks are then found through blob.meta.
        boot, blob = os.path.join(tmp, "old.boot"), os.path.join(tmp, "old.blob")
        create(tmp, "--type", "tar-rafs", "--bootstrap", boot, "--blob", blob, source=src)
        raw = bytearray(read(boot))
        at = rafs_v6.EXT_SUPERBLOCK_OFFSET + rafs_v6.EXT_SUPERBLOCK.offsets["s_chunk_table_offset"]
        raw[at : at + 16] = bytes(16)  # s_chunk_table_offset and s_chunk_table_size
        out["layer"] += [pair(bytes(raw), read(blob)), read(blob)]
        out["layer"].append(_external_pair(tmp, create))
    _VARIANTS.update(out)
    return out


def _external_pair(tmp: str, create) -> bytes:
    """A pair of the bootstrap nydus-image writes of files marked ``type=external`` (``--attributes``, as
    nydusify marks a model's files) and the file their chunks lie in, raw at no block boundary: a tar of
    them, named by its sha256, with a CRC32C per 4 KiB chunk."""
    import hashlib
    import io

    from nydus_inspect.digests import crc32c

    files = {"a": bytes(range(256)) * 20 + b"tail", "b": b"tiny"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    model = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(model)) as tf:
        where = {m.name: m.offset_data for m in tf}
    src = os.path.join(tmp, "external-src")
    os.makedirs(os.path.join(src, "m"))
    attrs = []
    for name, data in files.items():
        with open(os.path.join(src, "m", name), "wb") as f:
            f.write(data)
        crcs = ",".join(hex(crc32c(data[k : k + 4096])) for k in range(0, len(data), 4096))
        attrs.append(
            f"/m/{name} type=external blob_index=0 blob_id={hashlib.sha256(model).hexdigest()} "
            f"chunk_size=4096 chunk_0_compressed_offset={where[name]} compressed_size={len(model)} "
            f"file_size={len(data)} crcs={crcs}"
        )
    with open(os.path.join(src, "readme"), "wb") as f:
        f.write(b"not external\n")
    attributes = os.path.join(tmp, "attributes")
    with open(attributes, "w") as f:
        f.write("\n".join(attrs) + "\n")
    boot = os.path.join(tmp, "external.boot")
    # The chunk size of the attributes must be the bootstrap's.
    create(
        tmp, "--type", "dir-rafs", "--chunk-size", "0x1000", "--attributes", attributes,
        "--external-blob", os.path.join(tmp, "external.blob"), "--bootstrap", boot,
        "--blob", os.path.join(tmp, "external-other.blob"), source=src,
    )  # fmt: skip
    # nydus-image writes the external files' bootstrap beside the other one, its suffix in place of .boot.
    with open(os.path.join(tmp, "external.external"), "rb") as f:
        return pair(f.read(), model)


def _seekable_seeds(images: list[bytes]) -> list[bytes]:
    """Seekable layers of small EROFS images (test_seekable's builder): with SHA-512s and dm-verity, without."""
    import sys

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from test_seekable import make_seekable

    image = images[-1]
    return [make_seekable(image, 16384, verity=True), make_seekable(image, 4096, sha512=False)]


def _verity_seeds() -> list[bytes]:
    """dm-verity payloads over blocks of zeros, one hash level and two."""
    from nydus_inspect.formats import verity

    out = []
    for blocks, hash_block in ((8, 4096), (40, 1024)):
        params = verity.Params(data_blocks=blocks, hash_block_size=hash_block)
        _, tree = verity.build_tree(params, [params.digest(bytes(params.data_block_size))] * blocks)
        out.append(verity.Superblock(params).build(hash_block) + tree)
    return out


def _estargz_seeds(sample_toc: bytes) -> list[bytes]:
    """Small eStargz blobs laid out as the estargz writer lays them out: a file's data in a gzip member of its
    own, the TOC member (a tar holding stargz.index.json), the 51-byte footer; and one around the vector's
    sample TOC (its offsets point past that blob: the parser's refusal is the path exercised)."""
    import gzip
    import hashlib
    import io
    import json
    import struct
    import tarfile

    def toc_member(doc: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            ti = tarfile.TarInfo("stargz.index.json")
            ti.size = len(doc)
            tf.addfile(ti, io.BytesIO(doc))
        return gzip.compress(buf.getvalue(), mtime=0)

    def footer(toc_offset: int) -> bytes:
        extra = b"SG" + struct.pack("<H", 22) + b"%016xSTARGZ" % toc_offset
        head = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
        return head + bytes.fromhex("010000ffff") + bytes(8)

    payload = b"hello eStargz\n" * 300
    data = gzip.compress(payload, mtime=0)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    half = len(payload) // 2
    first, second = gzip.compress(payload[:half], mtime=0), gzip.compress(payload[half:], mtime=0)
    entries = [
        {"name": "d/", "type": "dir", "mode": 0o755},
        {
            "name": "d/f",
            "type": "reg",
            "size": len(payload),
            "offset": 0,
            "digest": digest,
            "chunkDigest": digest,
        },
        {"name": "d/l", "type": "hardlink", "linkName": "d/f"},
        {"name": "d/s", "type": "symlink", "linkName": "f"},
    ]
    one = toc_member(json.dumps({"version": 1, "entries": entries}).encode())
    chunked = [
        dict(entries[1], chunkSize=half, chunkDigest="sha256:" + hashlib.sha256(payload[:half]).hexdigest()),
        {
            "name": "d/f",
            "type": "chunk",
            "offset": len(first),
            "chunkOffset": half,
            "chunkDigest": "sha256:" + hashlib.sha256(payload[half:]).hexdigest(),
        },
    ]
    two = toc_member(json.dumps({"version": 1, "entries": chunked}).encode())
    # Two files in one gzip member (the writer's minimum chunk size): the second's tar header between them,
    # its data at its innerOffset in the member's output.
    other = b"second file\n" * 40
    pad = -len(payload) % 512
    shared_member = gzip.compress(payload + bytes(pad) + bytes(512) + other, mtime=0)
    shared = [
        entries[1],
        {
            "name": "d/g",
            "type": "reg",
            "size": len(other),
            "offset": 0,
            "innerOffset": len(payload) + pad + 512,
            "digest": "sha256:" + hashlib.sha256(other).hexdigest(),
            "chunkDigest": "sha256:" + hashlib.sha256(other).hexdigest(),
        },
    ]
    three = toc_member(json.dumps({"version": 1, "entries": shared}).encode())
    return [
        data + one + footer(len(data)),
        first + second + two + footer(len(first) + len(second)),
        shared_member + three + footer(len(shared_member)),
        toc_member(sample_toc) + footer(0),
    ]


def _mount_seeds() -> list[bytes]:
    """Crafted bootstraps of the hostile generator (values no kernel takes, names and targets FUSE cannot
    carry) and a small layer with data, packed here."""
    import sys
    from pathlib import Path

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import hostile

    from nydus_inspect.pack import PackOptions, pack

    out = []
    for family in (hostile.crafted_fields, hostile.kernel_limits):
        for case in family():
            path = _scratch_file("seed", b"")
            case.write(Path(path))
            with open(path, "rb") as f:
                out.append(f.read())
    tar = _scratch_file("seed-tar", hostile.small_tar())
    blob = tar + ".blob"
    try:
        pack(tar, blob, PackOptions())
        with open(blob, "rb") as f:
            out.append(f.read())
    finally:
        os.unlink(blob)
    return out


def _erofs_seeds() -> list[bytes]:
    """Small plain EROFS images made by erofs-utils 1.9.3 (`make oracle`), when it is built: uncompressed
    with shared xattrs, lz4 with big pclusters and legacy indexes, lzma and zstd, blocks of 512 to 2048
    bytes, and a --tar=i index of a tar of the same files."""
    import subprocess
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from oracle import find_erofs_utils

    where = find_erofs_utils()
    if where is None:
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "d"))
        for i in range(3):
            with open(os.path.join(src, "d", f"f{i}"), "wb") as f:
                f.write(b"".join(b"line %d\n" % k for k in range(3000 * (i + 1))))
            os.setxattr(os.path.join(src, "d", f"f{i}"), "user.x", b"shared")
        os.symlink("d/f0", os.path.join(src, "link"))
        opts = [
            ["-x1"],
            ["-zlz4hc", "-C16384", "-Elegacy-compress"],
            ["-zlzma"],
            ["-zzstd", "-C16384", "-Eztailpacking"],
            ["-zlz4hc", "-Efragments", "--xattr-prefix=user."],
            ["-b512", "-zlz4hc", "-C2048"],
            ["-b1024", "--chunksize=2048", "-Eforce-chunk-indexes"],
            ["-b2048", "-zlzma", "-Eztailpacking"],
            ["--tar=i"],
        ]
        tar = os.path.join(tmp, "src.tar")
        with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
            tf.add(src, arcname=".")
        for k, o in enumerate(opts):
            img = os.path.join(tmp, f"{k}.erofs")
            subprocess.run(
                [str(where / "mkfs.erofs"), "--quiet", "-T0", *o, img, tar if o == ["--tar=i"] else src],
                check=True,
                capture_output=True,
            )
            with open(img, "rb") as f:
                out.append(f.read())
    return out
