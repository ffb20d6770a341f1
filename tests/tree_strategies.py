"""Generated file trees (hypothesis) and the tar that holds one, shared by the round-trip tests and the
tests against the real nydus tools."""

from __future__ import annotations

import hashlib
import io
import tarfile

from hypothesis import strategies as st

NAME_PIECES = [
    b"a",
    b"B",
    b"caf\xe9",
    b"\xff\xfe",
    b"\xe5\x90\x8d",
    b".wh.",
    b".wh..wh..opq",
    b"-",
    b"#",
    b" ",
    b"\n",
    b"\\",
    b"..x",
    b"x" * 60,
]


@st.composite
def names(draw):
    raw = draw(
        st.one_of(
            st.lists(st.sampled_from(NAME_PIECES), min_size=1, max_size=3).map(b"".join),
            st.binary(min_size=1, max_size=16),
        )
    )
    raw = raw.replace(b"/", b"_").replace(b"\0", b"0")[:255]
    return raw if raw not in (b".", b"..") else raw + b"_"


SIZES = st.one_of(
    st.sampled_from([0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 12288, 12289]), st.integers(0, 20000)
)


#: Sizes around EROFS compressed extents of 16 blocks (64 KiB): one short of, at and past their ends.
EXTENT_SIZES = st.one_of(
    SIZES,
    st.sampled_from([65535, 65536, 65537, 2 * 65536 + 4095, 3 * 65536 + 1]),
    st.integers(0, 300_000),
)


@st.composite
def trees(draw, sizes=SIZES, mixed: bool = False):
    """(path, kind, attrs) in tar order, parents first; hard links after their targets. ``sizes``: the
    strategy regular files' sizes are drawn from; ``mixed``: some files alternate noise and text every
    40000 bytes (parts that compress and parts that do not, in one file)."""
    entries = []
    files = []  # (path, data) of regular files
    linkable = []  # paths a hard link may name: files, symlinks, fifos

    def attrs(kind):
        a = {
            "mode": draw(st.integers(0, 0o7777)) if kind != "symlink" else 0o777,
            "uid": draw(st.sampled_from([0, 1, 1000, 65534, 2**21, 2**32 - 2])),
            "gid": draw(st.integers(0, 70000)),
            "mtime": draw(st.one_of(st.just(1_700_000_000), st.integers(0, 15_000_000_000))),
        }
        if kind in ("file", "dir") and draw(st.booleans()):
            keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
            a["xattrs"] = {
                b"user." + k.encode(): v
                for k, v in draw(st.dictionaries(keys, st.binary(max_size=64), max_size=4)).items()
            }
        return a

    def directory(prefix: bytes, depth: int):
        for name in draw(st.lists(names(), max_size=5 if depth < 2 else 3, unique=True)):
            path = prefix + name
            kinds = ["file", "file", "file", "symlink", "fifo"] + (["dir", "dir"] if depth < 3 else [])
            kinds += ["hardlink"] if linkable else []
            kind = draw(st.sampled_from(kinds))
            if kind == "file":
                size = draw(sizes)
                how = draw(st.sampled_from(["noise", "zeros", "text", "copy"] + (["mixed"] if mixed else [])))
                if how == "mixed":
                    noise = hashlib.shake_256(path).digest(size)
                    text = (b"nydus chunk %d\n" * (size // 10 + 1))[:size]
                    data = b"".join(
                        (noise if (i // 40000) % 2 else text)[i : i + 40000] for i in range(0, size, 40000)
                    )
                elif how == "copy" and files:
                    data = draw(st.sampled_from(files))[1]
                elif how == "zeros":
                    data = bytes(size)
                elif how == "text":
                    data = (b"nydus chunk %d\n" * (size // 10 + 1))[:size]
                else:
                    data = hashlib.shake_256(path).digest(size)
                entries.append((path, "file", {**attrs("file"), "data": data}))
                files.append((path, data))
                linkable.append(path)
            elif kind == "dir":
                entries.append((path, "dir", attrs("dir")))
                directory(path + b"/", depth + 1)
            elif kind == "symlink":
                target = draw(st.binary(min_size=1, max_size=40)).replace(b"\0", b"0")
                entries.append((path, "symlink", {**attrs("symlink"), "target": target}))
                linkable.append(path)
            elif kind == "fifo":
                entries.append((path, "fifo", attrs("fifo")))
                linkable.append(path)
            else:
                entries.append((path, "hardlink", {"target": draw(st.sampled_from(linkable))}))

    directory(b"", 0)
    return entries


def write_tree_tar(path, entries):
    def s(raw: bytes) -> str:
        return raw.decode("utf-8", "surrogateescape")

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for p, kind, a in entries:
            info = tarfile.TarInfo(s(p))
            data = None
            if kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, s(a["target"])
            else:
                info.mode, info.uid, info.gid, info.mtime = a["mode"], a["uid"], a["gid"], a["mtime"]
                info.uname = info.gname = ""
                if a.get("xattrs"):
                    info.pax_headers = {"SCHILY.xattr." + s(k): s(v) for k, v in a["xattrs"].items()}
                if kind == "file":
                    info.size, data = len(a["data"]), io.BytesIO(a["data"])
                elif kind == "dir":
                    info.type = tarfile.DIRTYPE
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, s(a["target"])
                else:
                    info.type = tarfile.FIFOTYPE
            tf.addfile(info, data)
