"""Fuzz targets, one per parser: each takes bytes and must end in success or FormatError/UsageError.

Used by the short-budget test (tests/test_fuzz_targets.py) and by the long atheris runs
(tests/fuzz/run_atheris.py). Every target bounds its own work (nodes walked, chunks read), so a
hang or a large allocation is a parser bug, not a target artefact.
"""

from __future__ import annotations

import os
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
    except EXPECTED:
        pass


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


def fuzz_dir_block(data: bytes) -> None:
    try:
        rafs_v6.parse_dir_block(data[:4096], 0, 128)
    except EXPECTED:
        pass


_SCRATCH: dict[str, str] = {}


def _scratch_file(kind: str, data: bytes) -> str:
    """``data`` written to this target's one scratch file (in /dev/shm when there is one)."""
    path = _SCRATCH.get(kind)
    if path is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix=f"nydus-fuzz-{kind}-", dir=base)
        os.close(fd)
        _SCRATCH[kind] = path
    with open(path, "wb") as f:
        f.write(data)
    return path


def fuzz_layer(data: bytes) -> None:
    """The whole reading path on a file: sniff, ToC, entries, bootstrap, listing, chunk reads."""
    from nydus_inspect import query
    from nydus_inspect.layer import open_layer

    path = _scratch_file("layer", data)
    try:
        with open_layer(path) as layer:
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


def fuzz_erofs(data: bytes) -> None:
    """A plain EROFS image in memory: superblock, inodes, xattrs, directories, block maps, compressed
    indexes, and each pcluster decoded (at most MAX_NODES extents)."""
    from nydus_inspect import erofs_codecs
    from nydus_inspect.erofs import FRAGMENT_BLOB, Z_BLOB, Z_PARTIAL, Erofs
    from nydus_inspect.formats import erofs

    if len(data) >= 4096 and data[1032] & erofs.FEATURE_COMPAT_SB_CHKSUM:
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
                if c.blob_index < Z_BLOB or decoded >= MAX_NODES:
                    continue
                decoded += 1
                if c.blob_index == FRAGMENT_BLOB:
                    r.packed_read(c.compressed_offset, c.uncompressed_size)
                    continue
                fmt, partial = (c.blob_index - Z_BLOB) % Z_PARTIAL, c.blob_index - Z_BLOB >= Z_PARTIAL
                raw = data[c.compressed_offset : c.compressed_offset + c.compressed_size]
                erofs_codecs.decode(raw, fmt, c.uncompressed_size, partial, c.uncompressed_offset, 0)
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
    "dir_block": fuzz_dir_block,
    "layer": fuzz_layer,
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
    return {
        "erofs": erofs_images,
        "tar_header": [toc_blob[-512:], data_blob[-512:], toc_blob[2829 : 2829 + 512]],
        "layer_tar": [
            read("nydus/tar/" + name)
            for name in sorted(os.listdir(os.path.join(vectors, "nydus/tar")))
            if os.path.getsize(os.path.join(vectors, "nydus/tar", name)) < 1 << 20
        ][:4],
        "toc": [toc_blob[9010:9522], data_blob[13530 - 512 : 13530]],
        "blob_meta": [toc_blob[3341:7485], data_blob[8314:12442]],
        "rafs_v6": [boot, inline_boot],
        "rafs_v5": [v5],
        "dir_block": [boot[8192 + 4096 : 8192 + 8192]],
        "layer": [toc_blob, data_blob, boot, v5, *erofs_images[1:2]],
    }


def _erofs_seeds() -> list[bytes]:
    """Small plain EROFS images made by erofs-utils 1.9.3 (`make oracle`), when it is built: uncompressed
    with shared xattrs, lz4 with big pclusters and legacy indexes, lzma and zstd."""
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
        ]
        for k, o in enumerate(opts):
            img = os.path.join(tmp, f"{k}.erofs")
            subprocess.run(
                [str(where / "mkfs.erofs"), "--quiet", "-T0", *o, img, src], check=True, capture_output=True
            )
            with open(img, "rb") as f:
                out.append(f.read())
    return out
