"""Our RAFS v6 reader against Debian's erofs-utils 1.5, an independent EROFS implementation.

Acceptance criterion: the listing of a bootstrap agrees, path by path (type, mode, uid, gid, size, symlink
target), with what ``fsck.erofs --device=<zero-filled file> --extract=DIR`` produces from the same bootstrap.
With a "cache file" device (each chunk's decompressed bytes at its uncompressed offset, built here from our
chunk reader) the extracted files must carry the real bytes: that proves our chunk mapping.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest
from conftest import BOOTSTRAP, DATA_BLOB, TOC_BLOB

import nydus_inspect
from nydus_inspect import query
from nydus_inspect.formats import blob_meta
from nydus_inspect.formats.rafs_v6 import Dirent
from nydus_inspect.model import BLK, CHR, DIR, FIFO, REG, SOCK, SYMLINK, fsdecode

pytestmark = [pytest.mark.erofs]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="fsck.erofs --extract preserves owners and modes (and makes devices) only as root",
)

_MODE_OF_TYPE = {
    DIR: stat.S_IFDIR,
    REG: stat.S_IFREG,
    SYMLINK: stat.S_IFLNK,
    CHR: stat.S_IFCHR,
    BLK: stat.S_IFBLK,
    FIFO: stat.S_IFIFO,
    SOCK: stat.S_IFSOCK,
}


@pytest.fixture(scope="module", params=["rafs-v6-2.2.boot", "2fa78-image.boot"])
def v6(request, vectors, tmp_path_factory):
    """(bootstrap path, open_layer keyword arguments) for each real v6 bootstrap."""
    if request.param == "rafs-v6-2.2.boot":
        return str(vectors / BOOTSTRAP), {"blob_dir": str(vectors / "nydus/blobs")}
    # The bootstrap inside the inline-meta blob, written out as a file; its chunks live in that blob.
    out = tmp_path_factory.mktemp("boot") / "image.boot"
    with nydus_inspect.open_layer(str(vectors / TOC_BLOB)) as layer:
        out.write_bytes(layer.entry("image.boot"))
    return str(out), {"blobs": [str(vectors / TOC_BLOB)]}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr or proc.stdout}"
    return proc


def _zero_devices(layer, where: Path) -> list[str]:
    """One zero-filled device per blob, at least as large as the blob's uncompressed size."""
    devs = []
    for ent in layer.rafs.blobs:
        dev = where / f"zero-{ent.blob_index}.dev"
        with open(dev, "wb") as f:
            f.truncate(max(ent.uncompressed_size, 4096))
        devs.append(str(dev))
    return devs


def _cache_devices(layer, where: Path) -> list[str]:
    """One device per blob holding every chunk's decompressed bytes at its uncompressed offset (our chunk reader)."""
    images = [bytearray(max(ent.uncompressed_size, 4096)) for ent in layer.rafs.blobs]
    for node in query.list_nodes(layer, "/", recursive=True, with_chunks=True):
        for chunk in node.chunks or ():
            data = layer.read_chunk(chunk)
            assert len(data) == chunk.uncompressed_size
            images[chunk.blob_index][chunk.uncompressed_offset : chunk.uncompressed_offset + len(data)] = data
    devs = []
    for i, img in enumerate(images):
        dev = where / f"cache-{i}.dev"
        dev.write_bytes(bytes(img))
        devs.append(str(dev))
    return devs


def _extract(fsck: str, boot: str, devs: list[str], out: Path) -> None:
    _run([fsck, *[f"--device={d}" for d in devs], f"--extract={out}", boot])


def _our_listing(layer) -> dict[str, dict]:
    out = {}
    for n in query.list_nodes(layer, "/", recursive=True):
        out[fsdecode(n.path)] = {
            "type": n.type,
            "mode": n.perm,
            "uid": n.uid,
            "gid": n.gid,
            "size": n.size if n.type in (REG, SYMLINK) else None,
            "target": fsdecode(n.target) if n.target is not None else None,
            "mtime": n.mtime if n.type != SYMLINK else None,
            "rdev": n.rdev if n.type in (CHR, BLK) else None,
        }
    return out


def _extracted_listing(root: Path) -> dict[str, dict]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name != "." else dirpath
            if name == "." and dirpath != str(root):
                continue
            st = os.lstat(full)
            rel = "/" + os.path.relpath(full, root) if full != str(root) else "/"
            kind = next(t for t, m in _MODE_OF_TYPE.items() if stat.S_IFMT(st.st_mode) == m)
            out[rel] = {
                "type": kind,
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "size": st.st_size if kind in (REG, SYMLINK) else None,
                "target": os.readlink(full) if kind == SYMLINK else None,
                "mtime": int(st.st_mtime) if kind != SYMLINK else None,
                "rdev": st.st_rdev if kind in (CHR, BLK) else None,
            }
    return out


@pytest.mark.vectors
def test_fsck_accepts_the_bootstrap(v6, fsck_erofs, tmp_path):
    boot, kw = v6
    with nydus_inspect.open_layer(boot, **kw) as layer:
        devs = _zero_devices(layer, tmp_path)
    _run([fsck_erofs, *[f"--device={d}" for d in devs], boot])


@pytest.mark.vectors
@needs_root
def test_listing_agrees_with_fsck_extract(v6, fsck_erofs, tmp_path):
    boot, kw = v6
    with nydus_inspect.open_layer(boot, **kw) as layer:
        ours = _our_listing(layer)
        devs = _zero_devices(layer, tmp_path)
    out = tmp_path / "extract"
    _extract(fsck_erofs, boot, devs, out)
    theirs = _extracted_listing(out)
    assert sorted(ours) == sorted(theirs)
    for path in ours:
        assert ours[path] == theirs[path], path
    # The zero device gives zero bytes of the right length: fsck really read the chunks from the device.
    for path, attrs in ours.items():
        if attrs["type"] == REG:
            data = (out / path.lstrip("/")).read_bytes()
            assert data == bytes(attrs["size"]), path


@pytest.mark.vectors
def test_cache_file_device_reproduces_file_bytes(v6, fsck_erofs, tmp_path):
    boot, kw = v6
    with nydus_inspect.open_layer(boot, **kw) as layer:
        devs = _cache_devices(layer, tmp_path)
        files = {}
        for node in query.list_nodes(layer, "/", recursive=True, with_chunks=True):
            if node.type == REG:
                files[fsdecode(node.path)] = (b"".join(query.cat(layer, fsdecode(node.path))), node.chunks)
        chunk_size = layer.rafs.chunk_size
    out = tmp_path / "extract"
    _extract(fsck_erofs, boot, devs, out)
    assert files
    for path, (ours, chunks) in files.items():
        theirs = (out / path.lstrip("/")).read_bytes()
        assert theirs == ours, path
        # And fsck.erofs's bytes hash to the digests the bootstrap records, chunk by chunk.
        for k, chunk in enumerate(chunks):
            assert blake3.blake3(theirs[k * chunk_size : (k + 1) * chunk_size]).digest() == chunk.digest


def _dump(dump: str, devs: list[str], boot: str, path: str) -> dict[str, str]:
    text = _run([dump, *[f"--device={d}" for d in devs], f"--path={path}", boot]).stdout
    got = {}
    for key, pattern in {
        "size": r"Size: (\d+)",
        "nid": r"NID: (\d+)",
        "links": r"Links: (\d+)",
        "layout": r"Layout: (\d+)",
        "inode_size": r"Inode size: (\d+)",
        "xattr_size": r"Xattr size: (\d+)",
        "uid": r"Uid: (\d+)",
        "gid": r"Gid: (\d+)",
        "mode": r"Access: (\d+)/",
        "mtime": r"Timestamp: ([\d:. -]+)",
    }.items():
        m = re.search(pattern, text)
        assert m, f"dump.erofs output lacks {key}: {text}"
        got[key] = m.group(1).strip()
    return got


def _dump_tool(fsck_erofs: str) -> str:
    dump = shutil.which("dump.erofs") or os.path.join(os.path.dirname(fsck_erofs), "dump.erofs")
    if not os.path.exists(dump):
        pytest.skip("dump.erofs not installed")
    return dump


def _check_against_dump(dump: str, boot: str, devs: list[str], layer) -> int:
    """Every inode as dump.erofs shows it: nid, links, size, layout, inode and xattr size, owner, mode, mtime."""
    import time

    r = layer.rafs
    count = 0
    for node in query.list_nodes(layer, "/", recursive=True):
        ino = r.inode(node.nid)
        got = _dump(dump, devs, boot, fsdecode(node.path))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(node.mtime)) + f".{node.mtime_nsec:09d}"
        assert got == {
            "size": str(ino.i_size),
            "nid": str(node.nid),
            "links": str(node.nlink),
            "layout": str(ino.datalayout),
            "inode_size": str(ino.inode_size),
            "xattr_size": str(ino.xattr_size),
            "uid": str(node.uid),
            "gid": str(node.gid),
            "mode": f"{node.perm & 0o777:04o}",  # dump.erofs 1.5 shows the rwx bits only
            "mtime": stamp,
        }, node.path
        count += 1
    return count


@pytest.mark.vectors
def test_inode_fields_agree_with_dump_erofs(v6, fsck_erofs, tmp_path):
    dump = _dump_tool(fsck_erofs)
    boot, kw = v6
    with nydus_inspect.open_layer(boot, **kw) as layer:
        devs = _zero_devices(layer, tmp_path)
        assert _check_against_dump(dump, boot, devs, layer) >= 3


@pytest.mark.vectors
def test_devices_cover_the_blob_data(vectors):
    # The device for blob be7d77… must hold its whole uncompressed space (9 blocks): chunks end inside it.
    with nydus_inspect.open_layer(str(vectors / BOOTSTRAP), blobs=[str(vectors / DATA_BLOB)]) as layer:
        (ent,) = layer.rafs.blobs
        end = max(c.uncompressed_offset + c.uncompressed_size for c in layer.blob_file(0).layer.chunk_infos)
        assert end <= ent.uncompressed_size == 9 * 4096 == layer.rafs.meta.devices[0].blocks * 4096


# ============================================================================ a bootstrap with every inode kind
# The real vectors hold only a root directory and regular files. This one, assembled here from our own format
# codecs, has what they lack: compact and extended inodes, inline and block symlinks, devices, a fifo, a socket,
# a hardlink, xattrs and a directory spanning several blocks. erofs-utils checks it independently.
@dataclass
class Spec:
    path: str
    type: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    nsec: int = 0
    target: bytes = b""
    rdev: int = 0
    data: bytes = b""
    xattrs: dict = field(default_factory=dict)
    compact: bool = False
    plain: bool = False
    link_of: str | None = None  # a second name for that file's inode


CHUNK = 4096
BLOB_ID = b"ab" * 32
BUILD_TIME = (1_600_000_000, 123_456_789)  # compact inodes carry no mtime: EROFS gives them the build time


def _specs(entries: int = 150, name_len: int = 40) -> list[Spec]:
    specs = [
        Spec("/", DIR, 0o755, mtime=1_700_000_000, nsec=5),
        Spec("/bin", DIR, 0o700, uid=1000, gid=100, mtime=1_700_000_001, compact=True),
        Spec(
            "/bin/tool",
            REG,
            0o755,
            uid=0,
            gid=0,
            mtime=1_700_000_002,
            data=bytes(range(256)) * 40,
            xattrs={b"security.capability": b"\x01\x00\x00\x02" + bytes(16), b"user.origin": b"fuzz"},
        ),
        Spec("/bin/tool-again", REG, 0, link_of="/bin/tool"),
        Spec("/empty", REG, 0o600, uid=65534, gid=65534, mtime=1_700_000_003),
        Spec("/small", REG, 0o644, mtime=1_700_000_004, data=b"hello erofs\n", compact=True),
        Spec("/link", SYMLINK, 0o777, mtime=1_700_000_005, target=b"bin/tool"),
        Spec("/long-link", SYMLINK, 0o777, mtime=1_700_000_006, target=b"d/" * 1500 + b"end", plain=True),
        Spec("/dev-null", CHR, 0o666, mtime=1_700_000_007, rdev=os.makedev(1, 3)),
        Spec("/dev-loop", BLK, 0o660, gid=6, mtime=1_700_000_008, rdev=os.makedev(7, 300), compact=True),
        Spec("/pipe", FIFO, 0o644, mtime=1_700_000_009, xattrs={b"trusted.overlay.opaque": b"y"}),
        Spec("/sock", SOCK, 0o755, mtime=1_700_000_010),
        Spec("/many", DIR, 0o755, uid=7, gid=8, mtime=1_700_000_011, xattrs={b"user.k": b"v" * 100}),
        Spec("/plain", DIR, 0o755, mtime=1_700_000_012, plain=True),
        Spec("/plain/-first", REG, 0o644, mtime=1_700_000_013),
        Spec(
            "/tmp", DIR, 0o1777, mtime=1_700_000_014
        ),  # special bits (fsck.erofs 1.5 loses setuid: chown after chmod)
    ]
    for i in range(entries):  # > 4096 bytes of dirents: full blocks plus an inline tail
        name = f"/many/entry-{i:03d}-" + "x" * name_len
        specs.append(Spec(name, REG, 0o640, mtime=1_700_000_100 + i, compact=i % 2 == 0))
    return specs


def _ft(kind: str) -> int:
    from nydus_inspect.model import FT_OF_TYPE

    return FT_OF_TYPE[kind]


def build_bootstrap(specs: list[Spec]) -> tuple[bytes, bytes]:
    """A RAFS v6 bootstrap and the device (blob 0, uncompressed) holding its file data."""
    from nydus_inspect.formats import rafs_v6 as v6
    from nydus_inspect.formats._struct import round_up

    by_path = {s.path: s for s in specs}
    kids: dict[str, list[Spec]] = {s.path: [] for s in specs if s.type == DIR}
    for s in specs[1:]:
        kids[s.path.rsplit("/", 1)[0] or "/"].append(s)
    order: list[Spec] = []
    todo = [specs[0]]  # nydus's order: a directory, its non-directories, then each subdirectory in turn
    while todo:
        s = todo.pop()
        order.append(s)
        ordered = sorted(kids.get(s.path, ()), key=lambda k: k.path.encode())
        order += [k for k in ordered if k.type != DIR]
        todo += reversed([k for k in ordered if k.type == DIR])
    inodes = [s for s in order if s.link_of is None]
    meta = 2 * 4096
    # Pass 1: sizes, then 32-byte aligned slots that never cross a block with their inline part.
    plan = {}
    for s in inodes:
        isize = 32 if s.compact else 64
        xattr = v6.build_xattrs(s.xattrs)
        inline, full, dsize = b"", 0, 0
        if s.type == DIR:
            ents = [Dirent(b".", 0, 2), Dirent(b"..", 0, 2)] + [
                Dirent(k.path.rsplit("/", 1)[1].encode(), 0, 1) for k in kids[s.path]
            ]
            blocks, dsize = v6.build_dir_blocks(sorted(ents, key=lambda d: d.name))
            full = dsize // 4096 if not s.plain else -(-dsize // 4096)
            inline = b"" if s.plain else b"\0" * (dsize % 4096)
        elif s.type == SYMLINK and not s.plain:
            inline = s.target
        if s.type == REG:
            record = round_up(isize + len(xattr), 8) + 8 * -(-len(s.data) // CHUNK)
        else:
            record = isize + len(xattr) + len(inline)
        plan[s.path] = dict(isize=isize, xattr=xattr, record=record, full=full, dsize=dsize)
    pos = meta + 4096
    for s in inodes:
        rec = plan[s.path]["record"]
        if pos % 4096 + rec > 4096:
            pos = round_up(pos, 4096)
        plan[s.path]["off"] = pos
        plan[s.path]["nid"] = (pos - meta) // 32
        pos += round_up(rec, 32)
    block = round_up(pos, 4096) // 4096
    for s in inodes:  # data blocks: full dirent blocks, block symlinks
        p = plan[s.path]
        nblocks = p["full"] if s.type == DIR else (1 if s.type == SYMLINK and s.plain else 0)
        p["blkaddr"] = block if nblocks else 0
        block += nblocks
    chunk_table = block * 4096
    nid = {s.path: plan[s.link_of or s.path]["nid"] for s in order}
    nlink = Counter(s.link_of or s.path for s in order)
    # Pass 2: write.
    device = bytearray()
    chunks = []
    out = bytearray(chunk_table)
    for s in inodes:
        p = plan[s.path]
        layout = v6.LAYOUT_FLAT_PLAIN
        i_u, size = 0, 0
        tail = b""
        if s.type == DIR:
            ents = [Dirent(b".", nid[s.path], 2), Dirent(b"..", nid[s.path.rsplit("/", 1)[0] or "/"], 2)] + [
                Dirent(k.path.rsplit("/", 1)[1].encode(), nid[k.path], _ft(by_path[k.link_of or k.path].type))
                for k in kids[s.path]
            ]
            blocks, size = v6.build_dir_blocks(sorted(ents, key=lambda d: d.name))
            data = b"".join(blocks)
            full = size // 4096 * 4096 if not s.plain else len(data)
            out[p["blkaddr"] * 4096 : p["blkaddr"] * 4096 + full] = data[:full].ljust(full, b"\0")
            tail = data[full:]
            layout = v6.LAYOUT_FLAT_INLINE if tail else v6.LAYOUT_FLAT_PLAIN
            i_u = p["blkaddr"]
        elif s.type == SYMLINK:
            size = len(s.target)
            if s.plain:
                out[p["blkaddr"] * 4096 : p["blkaddr"] * 4096 + size] = s.target
                i_u = p["blkaddr"]
            else:
                tail, layout = s.target, v6.LAYOUT_FLAT_INLINE
        elif s.type == REG:
            layout, size, i_u = v6.LAYOUT_CHUNK_BASED, len(s.data), v6.CHUNK_FORMAT_INDEXES | 0
            idx = bytearray()
            for k in range(0, size, CHUNK):
                piece = s.data[k : k + CHUNK]
                blk = len(device) // 4096
                device += piece.ljust(4096, b"\0")
                ci = len(chunks)
                chunks.append(
                    v6.ChunkTableEntry(
                        blake3.blake3(piece).digest(),
                        0,
                        0,
                        len(piece),
                        len(piece),
                        blk * 4096,
                        blk * 4096,
                        k,
                        ci,
                        0,
                    )
                )
                idx += v6.ChunkIndex(0, ci, blk).build()
            at = p["off"] + round_up(p["isize"] + len(p["xattr"]), 8)
            out[at : at + len(idx)] = idx
        elif s.type in (CHR, BLK):
            i_u = s.rdev & 0xFFFFFFFF
        links = 2 + sum(k.type == DIR for k in kids[s.path]) if s.type == DIR else nlink[s.path]
        ino = v6.Inode(
            i_format=(layout << 1) | (0 if s.compact else 1),
            i_xattr_icount=v6.xattr_icount(len(p["xattr"])),
            i_mode=_MODE_OF_TYPE[s.type] | s.mode,
            i_nlink=links,
            i_size=size,
            i_u=i_u,
            i_ino=p["nid"],
            i_uid=s.uid,
            i_gid=s.gid,
            i_mtime=0 if s.compact else s.mtime,
            i_mtime_nsec=0 if s.compact else s.nsec,
        )
        raw = ino.build() + p["xattr"] + tail
        out[p["off"] : p["off"] + len(raw)] = raw
    table = b"".join(c.build() for c in chunks)
    out += table
    out += bytes(-len(out) % 4096)
    dev_blocks = len(device) // 4096
    blob = v6.BlobTableEntry(
        blob_id=BLOB_ID,
        blob_index=0,
        chunk_size=CHUNK,
        chunk_count=len(chunks),
        compression_algo=0,
        digest_algo=0,
        features=blob_meta.ALIGNED,
        compressed_size=len(device),
        uncompressed_size=len(device),
    )
    sb = v6.SuperBlock(
        s_inos=len(inodes),
        s_blocks=len(out) // 4096 + dev_blocks,
        s_meta_blkaddr=2,
        s_extra_devices=1,
        s_build_time=BUILD_TIME[0],
        s_build_time_nsec=BUILD_TIME[1],
    )
    ext = v6.ExtSuperBlock(
        s_flags=v6.COMPRESSION_NONE | v6.HASH_BLAKE3 | v6.EXPLICIT_UID_GID | v6.HAS_XATTR,
        s_blob_table_offset=4096,
        s_blob_table_size=256,
        s_chunk_size=CHUNK,
        s_chunk_table_offset=chunk_table,
        s_chunk_table_size=len(table),
    )
    out[1024:1152] = sb.build()
    out[1152:1408] = ext.build()
    out[1408:1536] = v6.DeviceSlot(blob_id=BLOB_ID, blocks=dev_blocks).build()
    out[4096:4352] = blob.build()
    return bytes(out), bytes(device)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    where = tmp_path_factory.mktemp("synthetic")
    boot, device = build_bootstrap(_specs())
    (where / "image.boot").write_bytes(boot)
    (where / "blob.dev").write_bytes(device)
    return str(where / "image.boot"), str(where / "blob.dev")


def _expected(specs: list[Spec]) -> dict[str, dict]:
    by_path = {s.path: s for s in specs}
    out = {}
    for s in specs:
        src = by_path[s.link_of] if s.link_of else s
        out[s.path] = {
            "type": src.type,
            "mode": src.mode,
            "uid": src.uid,
            "gid": src.gid,
            "size": len(src.data) if src.type == REG else (len(src.target) if src.type == SYMLINK else None),
            "target": src.target.decode() if src.type == SYMLINK else None,
            "mtime": (BUILD_TIME[0] if src.compact else src.mtime) if src.type != SYMLINK else None,
            "rdev": src.rdev if src.type in (CHR, BLK) else None,
        }
    return out


def test_synthetic_listing_is_what_was_built(synthetic):
    boot, _ = synthetic
    specs = _specs()
    with nydus_inspect.open_layer(boot) as layer:
        ours = _our_listing(layer)
        nodes = {fsdecode(n.path): n for n in query.list_nodes(layer, "/", recursive=True, with_chunks=True)}
    assert ours == _expected(specs)
    by_path = {s.path: s for s in specs}
    for path, node in nodes.items():
        src = by_path[by_path[path].link_of or path]
        assert node.xattrs == src.xattrs, path
        if src.type == REG:
            assert sum(c.uncompressed_size for c in node.chunks) == len(src.data)
        if not src.compact:
            assert node.mtime_nsec == src.nsec
    assert nodes["/bin/tool"].nid == nodes["/bin/tool-again"].nid and nodes["/bin/tool"].nlink == 2
    assert nodes["/bin/tool"].hardlink is not None


def test_synthetic_passes_fsck(synthetic, fsck_erofs):
    boot, device = synthetic
    _run([fsck_erofs, f"--device={device}", boot])


@needs_root
def test_synthetic_listing_agrees_with_fsck_extract(synthetic, fsck_erofs, tmp_path):
    boot, device = synthetic
    out = tmp_path / "extract"
    _extract(fsck_erofs, boot, [device], out)
    theirs = _extracted_listing(out)
    with nydus_inspect.open_layer(boot) as layer:
        ours = _our_listing(layer)
    assert sorted(ours) == sorted(theirs)
    for path in ours:
        assert ours[path] == theirs[path], path
    for s in _specs():
        if s.type == REG and not s.link_of:
            assert (out / s.path.lstrip("/")).read_bytes() == s.data, s.path


def test_synthetic_inodes_agree_with_dump_erofs(synthetic, fsck_erofs):
    dump = _dump_tool(fsck_erofs)
    boot, device = synthetic
    with nydus_inspect.open_layer(boot) as layer:
        assert _check_against_dump(dump, boot, [device], layer) == len(_specs())


def _inline_dirents(r, nid: int) -> dict[bytes, tuple[int, int]]:
    """name -> (nid, absolute offset of the dirent) for a directory held entirely inline."""
    from nydus_inspect.formats import rafs_v6

    ino = r.inode(nid)
    base = r.inode_offset(nid) + ino.inode_size + ino.xattr_size
    block = bytes(r.buf[base : base + ino.i_size])
    return {d.name: (d.nid, base + 12 * i) for i, d in enumerate(rafs_v6.parse_dir_block(block, base, nid))}


def test_directory_dag_is_refused_in_linear_time(tmp_path):
    # A chain of 48 directories, each holding "x" (the next one) and "y"; pointing every "y" at its "x" makes
    # a DAG with 2^48 paths. A recursive listing must refuse it (valid EROFS never links a directory twice)
    # instead of walking for ever.
    import time

    from nydus_inspect.model import RafsV6

    depth = 48
    specs = [Spec("/", DIR, 0o755)]
    path = ""
    for _ in range(depth):
        specs.append(Spec(path + "/y", DIR, 0o755))
        path += "/x"
        specs.append(Spec(path, DIR, 0o755))
    boot = bytearray(build_bootstrap(specs)[0])
    r = RafsV6(bytes(boot))
    nid = r.root_nid
    for _ in range(depth):
        ents = _inline_dirents(r, nid)
        x_nid, y_at = ents[b"x"][0], ents[b"y"][1]
        boot[y_at : y_at + 8] = x_nid.to_bytes(8, "little")
        nid = x_nid
    dag = tmp_path / "dag.boot"
    dag.write_bytes(bytes(boot))
    start = time.process_time()  # CPU: a walk that follows the DAG's 2^depth paths spends it
    with nydus_inspect.open_layer(str(dag)) as layer:
        assert [fsdecode(n.path) for n in query.list_nodes(layer, "/x/y")] == ["/x/y/x", "/x/y/y"]
        with pytest.raises(nydus_inspect.FormatError, match="linked twice"):
            list(query.list_nodes(layer, "/", recursive=True))
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize(("depth", "refused"), [(4095, False), (4096, True)])
def test_deep_directory_chain(tmp_path, depth, refused):
    import time

    specs = [Spec("/", DIR, 0o755)] + [Spec("/d" * k, DIR, 0o755) for k in range(1, depth + 1)]
    boot = tmp_path / "deep.boot"
    boot.write_bytes(build_bootstrap(specs)[0])
    start = time.process_time()
    with nydus_inspect.open_layer(str(boot)) as layer:
        if refused:
            with pytest.raises(nydus_inspect.FormatError, match="deeper than 4096 levels"):
                list(query.list_nodes(layer, "/", recursive=True))
        else:
            assert len(list(query.list_nodes(layer, "/", recursive=True))) == depth + 1
    assert time.process_time() - start < 5.0
