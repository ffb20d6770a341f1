"""Inspection operations: turn an opened layer into plain dicts for the front ends to print."""

from __future__ import annotations

from collections.abc import Iterator

from .codecs import Compressor
from .errors import UsageError
from .formats import blob_meta, rafs_v5, rafs_v6
from .formats.tar_header import IMAGE_BLOB
from .layer import KIND_BOOTSTRAP_V5, Layer
from .model import DIR, REG, Node, fsdecode


def info(layer: Layer) -> dict:
    out: dict = {"path": layer.path, "kind": layer.kind, "size": layer.size, "sha256": layer.digest}
    if layer.notes:
        out["notes"] = list(layer.notes)
    if layer.toc is not None:
        out["toc"] = {"entries": len(layer.toc), "digest": layer.toc_digest.hex(), "size": len(layer.toc_bytes) + 512}
    elif layer.sections:
        out["sections"] = [{"name": s.name, "offset": s.offset, "size": s.size} for s in layer.sections]
    if layer.blob_meta_header is not None:
        out["blob_meta"] = layer.blob_meta_header.to_json()
    if layer.kind == KIND_BOOTSTRAP_V5 or (layer.has_bootstrap and layer.is_v5):
        out["bootstrap"] = bootstrap_v5_info(layer.rafs_v5)
    elif layer.has_bootstrap:
        out["bootstrap"] = bootstrap_info(layer)
    return out


def bootstrap_info(layer: Layer) -> dict:
    r = layer.rafs
    sb, ext = r.sb, r.ext
    blobs = []
    for ent in r.blobs:
        j = ent.to_json()
        real = layer.blob_id(ent.blob_index)
        if real != ent.id:
            j["blob_id_resolved"] = real
        blobs.append(j)
    return {
        "version": 6,
        "size": r.size,
        "superblock": {
            "magic": f"{sb.s_magic:#x}",
            "feature_compat": f"{sb.s_feature_compat:#x}",
            "feature_incompat": f"{sb.s_feature_incompat:#x}",
            "block_size": 1 << sb.s_blkszbits,
            "root_nid": sb.s_root_nid,
            "inodes": sb.s_inos,
            "blocks": sb.s_blocks,
            "meta_blkaddr": sb.s_meta_blkaddr,
            "extra_devices": sb.s_extra_devices,
        },
        "ext_superblock": {
            "flags": f"{ext.s_flags:#x}",
            "flags_names": rafs_v6.super_flag_names(ext.s_flags),
            "compressor": ext.compressor.value,
            "digester": ext.digester.value,
            "explicit_uid_gid": bool(ext.s_flags & rafs_v6.EXPLICIT_UID_GID),
            "chunk_size": ext.s_chunk_size,
            "blob_table_offset": ext.s_blob_table_offset,
            "blob_table_size": ext.s_blob_table_size,
            "chunk_table_offset": ext.s_chunk_table_offset,
            "chunk_table_size": ext.s_chunk_table_size,
            "chunk_table_entries": ext.s_chunk_table_size // rafs_v6.CHUNK_TABLE_ENTRY.size,
            "prefetch_table_offset": ext.s_prefetch_table_offset,
            "prefetch_table_size": ext.s_prefetch_table_size,
        },
        "devices": [
            {"blob_id": d.blob_id.rstrip(b"\0").decode("ascii", "replace"), "blocks": d.blocks, "mapped_blkaddr": d.mapped_blkaddr}
            for d in r.meta.devices
        ],
        "blobs": blobs,
        "prefetch": r.meta.prefetch,
    }


def bootstrap_v5_info(r: rafs_v5.RafsV5) -> dict:
    sb = r.sb
    return {
        "version": 5,
        "superblock": {
            "magic": f"{sb.s_magic:#x}",
            "flags": f"{sb.s_flags:#x}",
            "flags_names": rafs_v6.super_flag_names(sb.s_flags),
            "chunk_size": sb.s_block_size,
            "inodes": sb.s_inodes_count,
            "inode_table_entries": sb.s_inode_table_entries,
            "prefetch_table_entries": sb.s_prefetch_table_entries,
        },
        "blobs": [{"index": i, "blob_id": b} for i, b in enumerate(r.blob_ids())],
    }


def toc_report(layer: Layer) -> dict:
    if layer.toc is not None:
        entries = []
        for e in layer.toc:
            j = e.to_json()
            if e.name == IMAGE_BLOB and e.compressed_offset != 0:
                j["compressed_offset"] = 0
                j["compressed_offset_field"] = e.compressed_offset
            entries.append(j)
        return {
            "path": layer.path,
            "source": "toc",
            "entries": entries,
            "toc_digest": layer.toc_digest.hex(),
            "toc_size": len(layer.toc_bytes) + 512,
            "notes": list(layer.notes),
        }
    if layer.sections:
        entries = []
        for name in layer.entry_names():
            off, size, comp, usize, _ = layer.entry_location(name)
            entries.append(
                {"name": name, "compressor": comp.value, "compressed_offset": off, "compressed_size": size,
                 "uncompressed_size": usize if usize >= 0 else None, "sha256": None}
            )
        return {"path": layer.path, "source": "tar-headers", "entries": entries, "toc_digest": None,
                "notes": list(layer.notes)}
    raise UsageError(f"{layer.path}: a {layer.kind} has no ToC or tar sections; toc needs a nydus layer blob")


def chunks_report(layer: Layer) -> Iterator[dict]:
    """Yield the header dict first (``{"header": ...}``), then one dict per chunk."""
    infos = layer.chunk_infos
    if infos is not None:
        digests = layer.chunk_digests
        yield {"source": "blob.meta", "header": layer.blob_meta_header.to_json()}
        for ci in infos:
            j = ci.to_json()
            if digests is not None and ci.index < len(digests):
                j["digest"] = digests[ci.index].hex()
            yield j
        return
    if layer.has_bootstrap and not layer.is_v5:
        r = layer.rafs
        yield {"source": "bootstrap chunk table", "header": {"entries": r.ext.s_chunk_table_size // 80}}
        for rec in r.chunk_table_entries():
            yield {
                "index": rec.index,
                "blob_index": rec.blob_index,
                "compressed_offset": rec.compressed_offset,
                "compressed_size": rec.compressed_size,
                "uncompressed_offset": rec.uncompressed_offset,
                "uncompressed_size": rec.uncompressed_size,
                "compressed": rec.compressed,
                "flags": rafs_v6.CHUNK_FLAG_NAMES and [n for b, n in rafs_v6.CHUNK_FLAG_NAMES.items() if rec.flags & b],
                "file_offset": rec.file_offset,
                "crc32": rec.crc32 if rec.flags & rafs_v6.CHUNK_HAS_CRC32 else None,
                "digest": rec.block_id.hex(),
            }
        return
    raise UsageError(f"{layer.path}: no blob.meta and no bootstrap: nothing describes chunks here")


def list_nodes(layer: Layer, path: str = "/", recursive: bool = False, with_chunks: bool = False) -> Iterator[Node]:
    """Nodes under ``path``: the node itself when not a directory, else its children (all, with -R)."""
    if layer.is_v5:
        yield from _list_v5(layer, path, recursive)
        return
    r = layer.rafs
    try:
        top = r.lookup(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{layer.path}: no such path in the image: {path}") from None
    if recursive:
        it = r.walk(top)
    elif top.type == DIR:
        it = r.children(top)
    else:
        it = iter([top])
    for node in it:
        if with_chunks and node.type == REG:
            r.chunks(node)
        yield node


def _list_v5(layer: Layer, path: str, recursive: bool) -> Iterator[Node]:
    from .model import node_type

    want = ("/" + path.strip("/")).encode() if path.strip("/") else b"/"
    for p, ino in layer.rafs_v5.walk():
        parent = p.rsplit(b"/", 1)[0] or b"/"
        inside = p == want or p.startswith(want.rstrip(b"/") + b"/")
        if not inside:
            continue
        if not recursive and parent != want and not (p == want and node_type(ino.i_mode) != DIR):
            continue
        yield Node(
            path=p, type=node_type(ino.i_mode), mode=ino.i_mode, uid=ino.i_uid, gid=ino.i_gid, mtime=ino.i_mtime,
            size=ino.i_size, nlink=ino.i_nlink, rdev=ino.i_rdev, target=ino.symlink or None, ino=ino.i_ino,
            hardlink=ino.i_ino if ino.i_flags & rafs_v5.FLAG_HARDLINK else None,
        )


def cat(layer: Layer, path: str) -> Iterator[bytes]:
    r = layer.rafs
    try:
        node = r.lookup(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{layer.path}: no such path in the image: {path}") from None
    if node.type != REG:
        raise UsageError(f"{layer.path}: {fsdecode(node.path)} is a {node.type}, not a regular file")
    return layer.read_file(node)


def describe_compressor(value: int) -> str:
    return Compressor.from_algo(value).value


__all__ = ["info", "toc_report", "chunks_report", "list_nodes", "cat", "blob_meta"]
