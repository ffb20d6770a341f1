"""A deterministic generator of hostile inputs, grouped in families.

Every byte is a function of this module (no randomness but seeded generators), so a failure names a case
that can be made again. A case is an input file plus what the commands may do with it; the runner in
``test_hostile.py`` runs the commands on each case under a timeout and a memory limit.

Families of tars (inputs of ``pack`` and ``diff``) are here. Families of crafted layers (bootstraps with
hostile inode fields, hard-link groups, xattrs, blob ids) plug in the same way: a generator of
:class:`Case` with ``kind="layer"``, registered in :data:`LAYER_FAMILIES`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 512
MIB = 1 << 20


@dataclass
class Case:
    """One hostile input: ``write(path)`` makes it (big ones are streamed to disk, never held)."""

    family: str
    name: str
    kind: str  # "tar": a layer tar (plain, gzip or zstd); "layer": a nydus layer or bootstrap
    write: Callable[[Path], None]
    #: what a pack of it must do: "refuse" (exit 2), "accept" (exit 0), or "either"
    pack: str = "either"
    #: the file name ends with this (the commands detect the format by content; this is for people)
    suffix: str = ".tar"

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


# ---------------------------------------------------------------------------- raw tar blocks
def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes,
    *,
    size: int = 0,
    typeflag: bytes = b"0",
    linkname: bytes = b"",
    mode: int = 0o644,
    mtime: int = 1_700_000_000,
) -> bytes:
    """A POSIX ustar header block, written here (not by tarfile, which refuses much of what we need)."""
    hdr = bytearray(BLOCK)
    hdr[0:100] = name[:100].ljust(100, b"\0")
    hdr[100:108] = _octal(mode, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = _octal(size, 12)
    hdr[136:148] = _octal(mtime, 12)
    hdr[156:157] = typeflag
    hdr[157:257] = linkname[:100].ljust(100, b"\0")
    hdr[257:265] = b"ustar\x0000"
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax(records: dict[bytes, bytes]) -> bytes:
    """A PAX extended header ('x') with its records, for the entry that follows it."""
    body = b""
    for key, value in records.items():
        core = b" " + key + b"=" + value + b"\n"
        n = len(core) + 1
        while len(str(n).encode()) + len(core) != n:
            n += 1
        body += str(n).encode() + core
    return header(b"PaxHeader", size=len(body), typeflag=b"x") + pad(body)


def member(
    name: bytes,
    data: bytes = b"",
    *,
    typeflag: bytes = b"0",
    linkname: bytes = b"",
    records: dict[bytes, bytes] | None = None,
    mode: int = 0o644,
    mtime: int = 1_700_000_000,
) -> bytes:
    out = pax(records) if records else b""
    size = len(data) if typeflag == b"0" else 0
    return (
        out
        + header(name, size=size, typeflag=typeflag, linkname=linkname, mode=mode, mtime=mtime)
        + pad(data)
    )


END = bytes(2 * BLOCK)


def seeded_bytes(tag: str, n: int) -> bytes:
    return hashlib.shake_256(f"hostile {tag}".encode()).digest(n)


def text(tag: str, n: int) -> bytes:
    """Compressible, varied bytes (so that corrupted compressed streams have real structure to break)."""
    rnd = random.Random(tag)
    words = [seeded_bytes(f"{tag} {i}", 3 + i % 7).hex().encode() for i in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + b" "
    return bytes(out[:n])


def small_tar() -> bytes:
    """A layer tar with a few files, a directory and a symlink: the victim of the corruptions."""
    return (
        b"".join(
            [
                member(b"etc/", typeflag=b"5", mode=0o755),
                member(b"etc/config", text("config", 20_000)),
                member(b"bin/", typeflag=b"5", mode=0o755),
                member(b"bin/tool", seeded_bytes("tool", 9_000) + text("tool", 30_000)),
                member(b"bin/link", typeflag=b"2", linkname=b"tool"),
                member(b"README", text("readme", 3_000)),
            ]
        )
        + END
    )


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


def zstd_bytes(data: bytes, checksum: bool = True) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)


def _const(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


# ---------------------------------------------------------------------------- tar families
def flip_positions(size: int, trailer: int, sample: int, seed: str) -> list[int]:
    """Bit positions to flip in a compressed input of ``size`` bytes: every bit of its last ``trailer``
    bytes (the gzip trailer, the zstd checksum), every bit of its first 16 (the headers) and ``sample``
    more drawn with a fixed seed."""
    rnd = random.Random(seed)
    bits = set(range(16 * 8)) | set(range((size - trailer) * 8, size * 8))
    while len(bits) < 16 * 8 + trailer * 8 + sample:
        bits.add(rnd.randrange(size * 8))
    return sorted(bits)


def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def corrupted_compressed(sample: int = 24) -> Iterator[Case]:
    """Single-bit flips of a .tar.gz and a .tar.zst (with a content checksum), and truncations of both.
    pack must refuse each, or make exactly the layer of the intact input."""
    plain = small_tar()
    for fmt, data, trailer in (("gz", gzip_bytes(plain), 8), ("zst", zstd_bytes(plain), 4)):
        for bit in flip_positions(len(data), trailer, sample, f"flip {fmt}"):
            yield Case(
                "corrupt-compressed",
                f"{fmt}-bit{bit}",
                "tar",
                _const(flipped(data, bit)),
                suffix=f".tar.{fmt}",
            )
        for cut in (1, trailer // 2, trailer, trailer + 1, len(data) // 2):
            yield Case(
                "corrupt-compressed",
                f"{fmt}-cut{cut}",
                "tar",
                _const(data[:-cut]),
                pack="refuse",
                suffix=f".tar.{fmt}",
            )


def nul_names() -> Iterator[Case]:
    """NUL bytes where a name is read from a length-delimited PAX record (a ustar field ends at its NUL)."""
    cases = {
        "pax-path": member(b"plain", b"x", records={b"path": b"a\0b"}),
        "pax-linkpath": member(b"sym", typeflag=b"2", records={b"linkpath": b"tar\0get"}),
        "pax-hardlink": member(b"a", b"x") + member(b"b", typeflag=b"1", records={b"linkpath": b"a\0"}),
        "xattr-name": member(b"f", b"x", records={b"SCHILY.xattr.user.a\0b": b"v"}),
        "libarchive-xattr-name": member(b"f", b"x", records={b"LIBARCHIVE.xattr.user.a%00b": b"dg=="}),
    }
    for name, body in cases.items():
        yield Case("nul-names", name, "tar", _const(body + END), pack="refuse")


def deep_tree(depth: int, files_per_level: int = 1, name: bytes = b"d") -> bytes:
    """A tar of ``depth`` nested directories with ``files_per_level`` small files in each."""
    out = []
    path = b""
    for level in range(depth):
        path += name + b"/"
        out.append(
            member(path, typeflag=b"5", mode=0o755, records={b"path": path}, mtime=1_600_000_000 + level)
        )
        for i in range(files_per_level):
            out.append(member(b"f%d" % i, b"%d %d" % (level, i), records={b"path": path + b"f%d" % i}))
    return b"".join(out) + END


def deep_names(depth: int = 15) -> Iterator[Case]:
    """Paths of 255-byte components: at the limits RAFS and Linux allow, and past them."""
    part = b"d" * 255
    ok = b"".join(
        member(
            b"/".join([part] * (i + 1)) + b"/",
            typeflag=b"5",
            mode=0o755,
            records={b"path": b"/".join([part] * (i + 1))},
        )
        for i in range(depth)
    )
    yield Case("deep-names", f"depth{depth}", "tar", _const(ok + END), pack="either")
    long_path = b"/".join([part] * 17)  # 4351 bytes: longer than PATH_MAX
    yield Case(
        "deep-names",
        "past-path-max",
        "tar",
        _const(member(b"x", b"x", records={b"path": long_path}) + END),
        pack="refuse",
    )
    yield Case(
        "deep-names",
        "long-component",
        "tar",
        _const(member(b"x", b"x", records={b"path": b"n" * 256}) + END),
        pack="refuse",
    )


def many_hardlinks(n: int = 20_000) -> Iterator[Case]:
    """One file with ``n`` hard links (each a long name, and the file with xattrs that repeat on each)."""

    def write(path: Path) -> None:
        with open(path, "wb") as f:
            f.write(
                member(b"data/file", text("linked", 10_000), records={b"SCHILY.xattr.user.tag": b"v" * 64})
            )
            for i in range(n):
                f.write(member(b"links/%06d-%s" % (i, b"l" * 60), typeflag=b"1", linkname=b"data/file"))
            f.write(END)

    yield Case("many-hardlinks", f"n{n}", "tar", write, pack="accept")


def dedup_bomb(size: int = 1 << 30) -> Iterator[Case]:
    """A file of ``size`` zero bytes in a zstd tar of a few hundred KB: every chunk of it is the same one,
    so its layer is small too; reading its data must not hold it."""

    def write(path: Path) -> None:
        import zstandard

        zero = bytes(MIB)
        with (
            open(path, "wb") as f,
            zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(f) as z,
        ):
            z.write(member(b"bomb", typeflag=b"5", mode=0o755))
            z.write(header(b"bomb/zeros", size=size))
            for _ in range(size // MIB):
                z.write(zero)
            z.write(bytes(size % MIB) + bytes(-size % BLOCK) + END)

    yield Case("dedup-bomb", f"{size >> 20}MiB", "tar", write, pack="accept", suffix=".tar.zst")


# ---------------------------------------------------------------------------- layer families
def bootstrap(entries: dict[bytes, dict]) -> bytes:
    """A RAFS v6 bootstrap (no blob) of the tree ``{path: attributes}``, laid out by our builder, which
    writes whatever it is given: names, targets and xattr names the tar reader would refuse, any mtime.
    Each value holds ``type`` ("dir", "file", "symlink") and any other Node field."""
    from nydus_inspect.builder import build_bootstrap
    from nydus_inspect.codecs import Compressor
    from nydus_inspect.digests import Digester
    from nydus_inspect.model import DIR, FMT_OF_TYPE, Node

    root = Node(path=b"/", type=DIR, mode=FMT_OF_TYPE[DIR] | 0o755, nlink=2, children={})
    for path, attrs in entries.items():
        attrs = dict(attrs)
        kind = attrs.pop("type")
        node = Node(path=path, type=kind, mode=FMT_OF_TYPE[kind] | attrs.pop("perm", 0o644), **attrs)
        if kind == DIR:
            node.children = {}
        elif kind == "file":
            node.chunks = []
        elif kind == "symlink":
            node.size = len(node.target or b"")
        parent = root
        parts = path.strip(b"/").split(b"/")
        for part in parts[:-1]:
            parent = parent.children[part]
        parent.children[parts[-1]] = node
    return build_bootstrap(
        root, [], chunk_size=0x100000, compressor=Compressor.ZSTD, digester=Digester.BLAKE3
    )


def crafted_fields() -> Iterator[Case]:
    """Bootstraps whose names, targets, xattr names or times no filesystem holds."""
    cases = {
        # Not the last name of its directory block, where a reader ends a name at its first NUL.
        "nul-name": {b"/a\0b": {"type": "file"}, b"/z": {"type": "file"}},
        "nul-dir-name": {b"/d\0": {"type": "dir"}, b"/z": {"type": "file"}},
        "nul-symlink-target": {b"/s": {"type": "symlink", "target": b"t\0u"}},
        "nul-xattr-name": {b"/f": {"type": "file", "xattrs": {b"user.a\0b": b"v"}}},
        "huge-mtime": {b"/f": {"type": "file", "mtime": (1 << 63) + 5}},
        "huge-dir-mtime": {b"/d": {"type": "dir", "mtime": (1 << 64) - 1}},
    }
    for name, entries in cases.items():
        yield Case("crafted-fields", name, "layer", _const(bootstrap(entries)), suffix=".boot")


def share_ino(boot: bytes, paths: list[bytes]) -> bytes:
    """``boot`` with the inodes at ``paths`` (different files) made to look like the names of one hard-linked
    file: the first one's i_ino on each, and an nlink of their number (what 2022 images wrote for real links)."""
    from nydus_inspect.model import RafsV6

    r = RafsV6(boot)
    i_ino = r.inode(r.lookup(paths[0]).nid).i_ino
    for path in paths:
        boot = patched(boot, path, i_ino=i_ino, i_nlink=len(paths))
    return boot


def crafted_links() -> Iterator[Case]:
    """Two different inodes sharing an i_ino with nlink 2: a symlink out of the target and a regular file after
    it (a reader grouping names by i_ino extracts the file as that symlink), and two regular files."""
    sym = bootstrap(
        {b"/a": {"type": "symlink", "target": b"../../../../../../tmp/outside"}, b"/b": {"type": "file"}}
    )
    yield Case(
        "crafted-links", "symlink-and-file", "layer", _const(share_ino(sym, [b"/a", b"/b"])), suffix=".boot"
    )
    two = bootstrap({b"/a": {"type": "file", "perm": 0o600}, b"/b": {"type": "file", "perm": 0o755}})
    yield Case("crafted-links", "two-files", "layer", _const(share_ino(two, [b"/a", b"/b"])), suffix=".boot")


#: Placeholders that build_xattrs lays out first (sorted before any user. name) as 4-byte entries: an empty
#: name suffix and an empty value; shared_xattrs overwrites each with a shared xattr id.
SHARED_PLACEHOLDERS = {b"system.posix_acl_access": b"", b"system.posix_acl_default": b""}


def shared_xattrs(boot: bytes, path: bytes, shared: dict[bytes, bytes]) -> bytes:
    """``boot`` with the xattrs ``shared`` (at most two, in the user. namespace) moved to a shared xattr area:
    the inode at ``path`` must have been built with SHARED_PLACEHOLDERS among its xattrs, whose 4-byte entries
    become the ids of ``shared``; the area is a block appended to the bootstrap, named by s_xattr_blkaddr."""
    import struct

    from nydus_inspect.formats import rafs_v6
    from nydus_inspect.model import RafsV6

    assert len(shared) <= len(SHARED_PLACEHOLDERS)
    r = RafsV6(boot)
    nid = r.lookup(path).nid
    ino = r.inode(nid)
    head = r.inode_offset(nid) + ino.inode_size
    out = bytearray(boot) + bytes(-len(boot) % 4096)
    area_block = len(out) // 4096
    area = bytearray()
    ids = []
    for name, value in shared.items():
        index, suffix = rafs_v6.split_xattr_name(name)
        ids.append(len(area) // 4)
        entry = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        area += entry + bytes(-len(entry) % 4)
    out += area + bytes(-len(area) % 4096)
    # Each placeholder entry is 4 bytes right after the 12-byte header: they become the ids, in order.
    for i, xid in enumerate(ids):
        at = head + 12 + 4 * i
        assert out[at + 1] in (2, 3) and out[at] == 0, "the placeholders come first"
        out[at : at + 4] = struct.pack("<I", xid)
    out[head + 4] = len(ids)
    sb = rafs_v6.SUPERBLOCK_OFFSET + rafs_v6.SUPERBLOCK.offsets["s_xattr_blkaddr"]
    out[sb : sb + 4] = struct.pack("<I", area_block)
    return bytes(out)


def crafted_xattrs() -> Iterator[Case]:
    """Shared xattrs: a readable shared area (which nydus never writes), and a shared count set on a bootstrap
    without one (its ids are the bytes of the inline entries)."""
    boot = bootstrap({b"/f": {"type": "file", "xattrs": {**SHARED_PLACEHOLDERS, b"user.inline": b"i"}}})
    good = shared_xattrs(boot, b"/f", {b"user.shared": b"sv", b"user.second": b"two"})
    yield Case("crafted-xattrs", "shared-area", "layer", _const(good), suffix=".boot")
    bad = bytearray(bootstrap({b"/f": {"type": "file", "xattrs": {b"user.a": b"1", b"user.b": b"2"}}}))
    from nydus_inspect.model import RafsV6

    r = RafsV6(bytes(bad))
    nid = r.lookup(b"/f").nid
    bad[r.inode_offset(nid) + r.inode(nid).inode_size + 4] = 1
    yield Case("crafted-xattrs", "shared-count-without-area", "layer", _const(bytes(bad)), suffix=".boot")


def patched(boot: bytes, path: bytes | None = None, **fields: int) -> bytes:
    """``boot`` with fields of the inode at ``path`` (or of the superblock, without a path) set to values the
    builder would not write: each written in place with its on-disk width, nothing else moved."""
    import struct

    from nydus_inspect.formats import rafs_v6
    from nydus_inspect.model import RafsV6

    out = bytearray(boot)
    if path is None:
        layout, base = rafs_v6.SUPERBLOCK, rafs_v6.SUPERBLOCK_OFFSET
    else:
        r = RafsV6(boot)
        nid = r.lookup(path).nid
        layout, base = r.inode(nid).layout, r.inode_offset(nid)
    for name, value in fields.items():
        fmt = "<" + dict(layout.fields)[name]
        struct.pack_into(fmt, out, base + layout.offsets[name], value)
    return bytes(out)


def kernel_limits() -> Iterator[Case]:
    """Bootstraps holding values no kernel takes (a size or a time past a signed 64-bit number, an unknown file
    type, names and targets FUSE cannot carry), each beside a healthy file and directory that must stay
    readable: a mount refuses or clamps the one inode, never ends."""
    ok = {b"/ok": {"type": "file"}, b"/dir": {"type": "dir"}, b"/dir/inner": {"type": "file"}}
    ext = {"type": "file", "mtime": 1}  # an mtime makes the builder write an extended inode
    cases: dict[str, tuple[dict, bytes | None, dict]] = {
        "size-2^63": ({b"/bad": ext}, b"/bad", {"i_size": (1 << 63) + 1}),
        "size-2^64-1": ({b"/bad": ext}, b"/bad", {"i_size": (1 << 64) - 1}),
        "size-without-chunks": ({b"/bad": ext}, b"/bad", {"i_size": (1 << 63) - 1}),
        "dir-size-2^64-1": ({b"/bad": {"type": "dir", "mtime": 1}}, b"/bad", {"i_size": (1 << 64) - 1}),
        "symlink-size-2^63": (
            {b"/bad": {"type": "symlink", "target": b"ok", "mtime": 1}},
            b"/bad",
            {"i_size": 1 << 63},
        ),
        "mtime-2^63": ({b"/bad": ext}, b"/bad", {"i_mtime": 1 << 63}),
        "mtime-max-nsec": (
            {b"/bad": ext},
            b"/bad",
            {"i_mtime": (1 << 63) - 1, "i_mtime_nsec": (1 << 32) - 1},
        ),
        "dir-mtime-2^64-1": ({b"/bad": {"type": "dir", "mtime": 1}}, b"/bad", {"i_mtime": (1 << 64) - 1}),
        "unknown-type": ({b"/bad": ext}, b"/bad", {"i_mode": 0o644}),
        "type-bits-all-set": ({b"/bad": ext}, b"/bad", {"i_mode": 0o177777}),
        "ids-and-nlink-max": (
            {b"/bad": ext},
            b"/bad",
            {"i_uid": 2**32 - 1, "i_gid": 2**32 - 1, "i_nlink": 2**32 - 1},
        ),
        "inos-2^64-1": ({}, None, {"s_inos": (1 << 64) - 1}),
        "build-time-2^64-1": ({b"/bad": {"type": "file"}}, None, {"s_build_time": (1 << 64) - 1}),
    }
    for name, (entries, path, fields) in cases.items():
        boot = bootstrap({**ok, **entries})
        yield Case("kernel-limits", name, "layer", _const(patched(boot, path, **fields)), suffix=".boot")
    names = {
        "name-300-bytes": {b"/" + b"n" * 300: {"type": "file"}},
        "name-1100-bytes": {b"/" + b"n" * 1100: {"type": "file"}},
        "symlink-target-5000-bytes": {b"/bad": {"type": "symlink", "target": b"t/" * 2500}},
    }
    for name, entries in names.items():
        yield Case("kernel-limits", name, "layer", _const(bootstrap({**ok, **entries})), suffix=".boot")
    # One name twice in a directory (the second a different inode): "twicf" renamed in its dirent block.
    twice = bootstrap({**ok, b"/twice": {"type": "file"}, b"/twicf": {"type": "symlink", "target": b"ok"}})
    assert twice.count(b"twicf") == 1
    yield Case(
        "kernel-limits", "name-twice", "layer", _const(twice.replace(b"twicf", b"twice")), suffix=".boot"
    )


def deep_bootstrap(depth: int = 4000, name_len: int = 255) -> bytes:
    """A bootstrap of ``depth`` nested directories of ``name_len``-byte names, a file at the bottom: about
    35 KB, yet a reader that keeps each directory's full path holds depth squared times the name length."""
    from nydus_inspect.builder import build_bootstrap
    from nydus_inspect.codecs import Compressor
    from nydus_inspect.digests import Digester
    from nydus_inspect.model import DIR, FMT_OF_TYPE, REG, Node

    root = Node(path=b"/", type=DIR, mode=FMT_OF_TYPE[DIR] | 0o755, nlink=2, children={})
    node = root
    for level in range(depth):
        name = (b"%d-" % level).ljust(name_len, b"n")
        # Nodes carry their name only: the builder needs no paths, and full ones would be what we avoid.
        child = Node(path=name, type=DIR, mode=FMT_OF_TYPE[DIR] | 0o755, nlink=2, children={})
        node.children[name] = child
        node = child
    node.children[b"bottom"] = Node(path=b"bottom", type=REG, mode=FMT_OF_TYPE[REG] | 0o644, chunks=[])
    return build_bootstrap(
        root, [], chunk_size=0x100000, compressor=Compressor.ZSTD, digester=Digester.BLAKE3
    )


def deep_layers() -> Iterator[Case]:
    yield Case("deep-layers", "4000x255", "layer", _const(deep_bootstrap()), suffix=".boot")


TAR_FAMILIES: dict[str, Callable[[], Iterator[Case]]] = {
    "corrupt-compressed": corrupted_compressed,
    "nul-names": nul_names,
    "deep-names": deep_names,
    "many-hardlinks": many_hardlinks,
    "dedup-bomb": dedup_bomb,
}
#: Crafted layers (bootstraps with hostile fields) join here, as generators of Case(kind="layer").
LAYER_FAMILIES: dict[str, Callable[[], Iterator[Case]]] = {
    "crafted-fields": crafted_fields,
    "crafted-links": crafted_links,
    "crafted-xattrs": crafted_xattrs,
    "deep-layers": deep_layers,
    "kernel-limits": kernel_limits,
}


def cases(families: dict[str, Callable[[], Iterator[Case]]] | None = None) -> list[Case]:
    """Every case of the given families (all of them by default), in a fixed order."""
    chosen = families if families is not None else {**TAR_FAMILIES, **LAYER_FAMILIES}
    return [case for make in chosen.values() for case in make()]


# ---------------------------------------------------------------------------- running commands on cases
#: Address space a command may use on any case: holding a 1 GiB file's bytes is out of reach.
MEMORY_LIMIT = 512 << 20


def run_limited(*args, timeout: float = 120, memory: int = MEMORY_LIMIT, stdout=None, cwd=None):
    """``nydus-inspect ARGS`` under RLIMIT_AS=``memory`` and a timeout; stdout is discarded unless a file is
    given (a command streaming gigabytes must not be captured here), stderr is captured.
    Returns the CompletedProcess; a timeout raises subprocess.TimeoutExpired."""
    import os
    import resource
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
