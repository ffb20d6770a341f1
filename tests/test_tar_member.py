"""The layer tar reader (formats/tar_member + tarstream.read_tar) against Python's tarfile as an
independent writer and reader, in every tar format, and on hand-made edge cases."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nydus_inspect.errors import FormatError
from nydus_inspect.formats import tar_member
from nydus_inspect.model import BLK, CHR, DIR, FIFO, REG, SYMLINK
from nydus_inspect.tarstream import read_tar

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def _tar(fmt: int, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def _read(data: bytes, path=None):
    """Read through both paths: a byte stream, and a mapped plain file when ``path`` is given."""
    files: dict[bytes, bytes] = {}

    def on_file(node, fobj, ref) -> None:
        files[node.path] = fobj.read()

    tree = read_tar(io.BufferedReader(io.BytesIO(data)), on_file, "t.tar")
    if path is not None:
        path.write_bytes(data)
        mapped: dict[bytes, bytes] = {}
        with open(path, "rb") as f:
            other = read_tar(f, lambda n, fobj, ref: mapped.__setitem__(n.path, fobj.read()), "t.tar")
        assert mapped == files
        assert [(p, n.to_json()) for p, n in other.walk()] == [(p, n.to_json()) for p, n in tree.walk()]
    return tree, files


def _nodes(tree):
    return {p: n for p, n in tree.walk()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_type_in_every_format(fmt, tmp_path):
    long_dir = "d" * 60 + "/" + "e" * 60  # needs the ustar prefix (or a GNU/PAX long name)
    members = [
        (_info("dir", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=100, mtime=1_700_000_000), None),
        (_info("dir/file", size=5, mode=0o4755, mtime=1_600_000_000), b"hello"),
        (_info("dir/empty", size=0), b""),
        (_info("dir/link", tarfile.SYMTYPE, linkname="../dir/file"), None),
        # A hard link's header bears on its inode (tarstream's rule): this one says what the file's says.
        (_info("dir/hard", tarfile.LNKTYPE, linkname="dir/file", mode=0o4755, mtime=1_600_000_000), None),
        (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None),
        (_info("dev/pipe", tarfile.FIFOTYPE), None),
        (_info(long_dir + "/f", size=3), b"abc"),
    ]
    tree, files = _read(_tar(FORMATS[fmt], members), tmp_path / "t.tar")
    nodes = _nodes(tree)
    assert nodes[b"/dir"].type == DIR and nodes[b"/dir"].mode & 0o7777 == 0o750
    assert (nodes[b"/dir"].uid, nodes[b"/dir"].gid, nodes[b"/dir"].mtime) == (1000, 100, 1_700_000_000)
    f = nodes[b"/dir/file"]
    assert f.type == REG and f.mode & 0o7777 == 0o4755 and f.size == 5 and f.mtime == 1_600_000_000
    assert files[b"/dir/file"] == b"hello" and files[b"/dir/empty"] == b""
    assert nodes[b"/dir/link"].type == SYMLINK and nodes[b"/dir/link"].target == b"../dir/file"
    hard = nodes[b"/dir/hard"]  # the walk's node of the inode's other name: of the same group, first name
    assert f.hardlink is not None and hard.hardlink == f.hardlink and hard.path == f.path and f.nlink == 2
    assert nodes[b"/dev/null"].type == CHR and nodes[b"/dev/null"].rdev == os.makedev(1, 3)
    assert nodes[b"/dev/sda"].type == BLK and nodes[b"/dev/sda"].rdev == os.makedev(8, 0)
    assert nodes[b"/dev/pipe"].type == FIFO
    assert files[("/" + long_dir + "/f").encode()] == b"abc"


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_long_names_non_utf8_and_big_numbers(fmt, tmp_path):
    name = "x/" + "n" * 150 + "/\udcff\udcfe-raw"
    target = "t" * 200
    big_uid = 0o7777777 + 5  # beyond 7 octal digits: PAX record or GNU base-256
    members = [
        (_info(name, size=4, uid=big_uid, gid=big_uid), b"data"),
        (_info("x/sym", tarfile.SYMTYPE, linkname=target), None),
    ]
    tree, files = _read(_tar(FORMATS[fmt], members), tmp_path / "t.tar")
    raw = os.fsencode("/" + name)
    assert files[raw] == b"data"
    node = _nodes(tree)[raw]
    assert (node.uid, node.gid) == (big_uid, big_uid)
    assert _nodes(tree)[b"/x/sym"].target == target.encode()


def test_pax_xattrs_mtime_and_size_records(tmp_path):
    info = _info("f", size=3, mtime=5)
    info.pax_headers = {
        "SCHILY.xattr.user.k": "v",
        "mtime": "1700000000.75",
        "SCHILY.xattr.security.capability": "\x01",
    }
    tree, _ = _read(_tar(tarfile.PAX_FORMAT, [(info, b"abc")]), tmp_path / "t.tar")
    node = _nodes(tree)[b"/f"]
    assert node.mtime == 1_700_000_000
    assert node.xattrs == {b"user.k": b"v", b"security.capability": b"\x01"}


def test_global_header_applies_to_later_entries_with_a_warning():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "4242"}) as t:
        t.addfile(_info("a", size=0))
    tree, _ = _read(buf.getvalue())
    assert _nodes(tree)[b"/a"].uid == 4242
    assert any("PAX global header" in w for w in tree.warnings)


def test_v7_directory_marked_by_trailing_slash():
    raw = bytearray(_tar(tarfile.GNU_FORMAT, [(_info("old/", size=0), b"")]))
    raw[156:157] = b"\0"  # old regular-file flag
    raw[257:265] = bytes(8)  # no magic: a v7 header
    raw[148:156] = b"%06o\0 " % (sum(raw[:148]) + 256 + sum(raw[156:512]))
    tree, _ = _read(bytes(raw))
    assert _nodes(tree)[b"/old"].type == DIR


def test_signed_checksum_accepted():
    raw = bytearray(_tar(tarfile.GNU_FORMAT, [(_info("\udce9", size=0), b"")]))  # a byte >= 0x80 in the name
    signed = sum(b - 256 if b >= 128 else b for b in raw[:148] + raw[156:512]) + 256
    raw[148:156] = b"%06o\0 " % signed
    tree, _ = _read(bytes(raw))
    assert b"/\xe9" in _nodes(tree)


def test_base256_numbers():
    assert tar_member.number(b"\x80" + (12345).to_bytes(11, "big"), "size", 0) == 12345
    assert tar_member.number(b"\xff" * 11 + b"\xfe", "mtime", 0) == -2
    assert tar_member.number(b"  644 \0\0", "mode", 0) == 0o644
    assert tar_member.number(b"\0" * 8, "uid", 0) == 0
    with pytest.raises(FormatError, match="octal"):
        tar_member.number(b"0009\0", "mode", 0)


@pytest.mark.parametrize(
    "damage",
    [
        "checksum",
        "truncated-header",
        "truncated-data",
        "pax-record",
        "huge-pax",
        "negative-size",
        "extended-header-then-end",
    ],
)
def test_damage_is_an_error_not_a_silent_end(damage, tmp_path):
    """Python's tarfile ends the archive quietly at a bad header after the first; we refuse."""
    good = _tar(tarfile.PAX_FORMAT, [(_info("a", size=600), b"a" * 600), (_info("b", size=3), b"bcd")])
    raw = bytearray(good)
    second = 512 + 1024  # header of "b"
    if damage == "checksum":
        raw[second + 10] ^= 0x01
        data = bytes(raw)
    elif damage == "truncated-header":
        data = bytes(raw[: second + 100])
    elif damage == "truncated-data":
        data = bytes(raw[: 512 + 300])
    elif damage == "pax-record":
        data = _tar(tarfile.PAX_FORMAT, [(_pax_info({"path": "p"}), b"")])
        data = data.replace(b"path=p\n", b"path=p\x00", 1)
        data = _fix_checksums(data)
    elif damage == "negative-size":
        hdr = bytearray(_tar(tarfile.USTAR_FORMAT, [(_info("x", size=0), b"")])[:512])
        hdr[124:136] = b"\xff" * 11 + b"\xfe"  # base-256 -2
        data = _fix_checksums(bytes(hdr) + bytes(1024))
    elif damage == "extended-header-then-end":
        long = _tar(tarfile.GNU_FORMAT, [(_info("n" * 200, size=0), b"")])
        data = long[:1024] + bytes(1024)  # the 'L' header and its name, then the end-of-archive blocks
    else:
        hdr = bytearray(_tar(tarfile.USTAR_FORMAT, [(_info("x", size=0), b"")])[:512])
        hdr[156:157] = b"x"
        hdr[124:136] = b"%011o\0" % (tar_member.MAX_META_DATA + 1)
        data = _fix_checksums(bytes(hdr) + bytes(1024))
    with pytest.raises(FormatError):
        _read(data, tmp_path / "t.tar")


def _pax_info(records: dict[str, str]) -> tarfile.TarInfo:
    info = _info("f", size=0)
    info.pax_headers = records
    return info


def _fix_checksums(data: bytes) -> bytes:
    """Recompute the checksum of every header block in a tar whose data we edited."""
    raw = bytearray(data)
    pos = 0
    while pos + 512 <= len(raw) and any(raw[pos : pos + 512]):
        raw[pos + 148 : pos + 156] = b" " * 8
        raw[pos + 148 : pos + 155] = b"%06o\0" % sum(raw[pos : pos + 512])
        size = max(0, tar_member.number(bytes(raw[pos + 124 : pos + 136]), "size", pos))
        pos += 512 + -(-size // 512) * 512
    return bytes(raw)


def test_empty_input_is_an_empty_layer_and_garbage_is_not_a_tar():
    assert _nodes(_read(b"")[0]).keys() == {b"/"}
    with pytest.raises(FormatError, match="not a tar"):
        _read(b"this is not a tar file".ljust(512, b"!"))


def test_last_file_without_padding_is_read_the_same_on_both_paths(tmp_path):
    """A tar cut right after the last file's data (its padding missing) holds all its bytes: both
    readers accept it, whether or not the caller reads the data."""
    data = _tar(tarfile.PAX_FORMAT, [(_info("a", size=700), b"a" * 700)])
    cut = data[: 512 + 700]
    tree, files = _read(cut, tmp_path / "t.tar")
    assert files == {b"/a": b"a" * 700}
    path = tmp_path / "t.tar"
    with open(path, "rb") as f:
        assert _nodes(read_tar(f, None, "t.tar"))[b"/a"].size == 700
    assert _nodes(read_tar(io.BufferedReader(io.BytesIO(cut)), None, "t.tar"))[b"/a"].size == 700


#: (offset, length) of the numeric fields of a tar header.
_NUMERIC = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12), "mtime": (136, 12)}


def _header_fields(**fields: bytes) -> bytes:
    """A ustar header for an empty file "f" with raw numeric fields replaced, checksum fixed."""
    hdr = bytearray(
        _tar(tarfile.USTAR_FORMAT, [(_info("f", size=0, mode=0o644, uid=1, gid=2, mtime=3), b"")])[:512]
    )
    for name, raw in fields.items():
        start, length = _NUMERIC[name]
        hdr[start : start + length] = raw.ljust(length, b"\0")
    return _fix_checksums(bytes(hdr))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"mode": b"644 \0"},  # space-terminated, not zero-padded
        {"uid": b"\x80" + (70000).to_bytes(7, "big")},  # base-256
        {"gid": b"12\0junk"},  # text after the NUL is ignored
        {"mtime": b"\0" * 12},  # empty field: 0
        {"mode": b"   644  "},  # spaces both sides
    ],
)
def test_numeric_fields_fast_path_agrees_with_number(fields):
    """The one-pass octal read gives what number() gives, field by field, for every spelling tar writers use."""
    block = _header_fields(**fields)
    got = tar_member.parse_header(block, 0)
    want = {
        name: tar_member.number(block[start : start + length], name, start)
        for name, (start, length) in _NUMERIC.items()
    }
    assert (got.mode, got.uid, got.gid, got.size, got.mtime) == tuple(want.values())


def test_bad_checksum_is_named_before_a_bad_field():
    """A header with a bad checksum and a non-octal field is reported as a bad checksum (not a tar header at
    all), as before the fast path; with a good checksum the field itself is named."""
    block = bytearray(_header_fields(mode=b"0009\0"))
    assert "mode" in str(pytest.raises(FormatError, tar_member.parse_header, bytes(block), 0).value)
    block[0] ^= 1  # the name changes, the checksum no longer matches
    assert "bad checksum" in str(pytest.raises(FormatError, tar_member.parse_header, bytes(block), 0).value)


def test_unusual_paths_are_normalised_like_plain_ones(tmp_path):
    """Names outside the fast path ("./a//b/", ".hidden", "a/./b") end up where plain ones would."""
    members = [
        (_info("./a//b/", kind=tarfile.DIRTYPE), None),
        (_info(".hidden", size=1), b"h"),
        (_info("a/./b/c", size=1), b"c"),
        (_info("/abs", size=1), b"x"),
        (_info("a/b/", kind=tarfile.DIRTYPE), None),
    ]
    tree, files = _read(_tar(tarfile.GNU_FORMAT, members), tmp_path / "t.tar")
    assert set(_nodes(tree)) == {b"/", b"/a", b"/a/b", b"/a/b/c", b"/.hidden", b"/abs"}
    assert files == {b"/.hidden": b"h", b"/a/b/c": b"c", b"/abs": b"x"}
    with pytest.raises(FormatError, match=r"climbs out"):
        _read(_tar(tarfile.GNU_FORMAT, [(_info("a/../../x", size=0), b"")]))


@pytest.mark.parametrize("replacement", ["file", "hardlink", "symlink"])
def test_a_directory_replaced_then_needed_again(replacement, tmp_path):
    """Tar's last entry wins: once "d" is no longer a directory, "d/new" needs a new, empty "d" (the
    parent lookup must not hand out the directory that was put out of the tree)."""
    if replacement == "file":
        repl = (_info("d", size=1), b"f")
    elif replacement == "hardlink":
        repl = (_info("d", kind=tarfile.LNKTYPE, linkname="target"), None)
    else:
        repl = (_info("d", kind=tarfile.SYMTYPE, linkname="elsewhere"), None)
    members = [
        (_info("target", size=1), b"t"),
        (_info("d", kind=tarfile.DIRTYPE), None),
        (_info("d/old", size=1), b"o"),
        repl,
        (_info("d/new", size=1), b"n"),
    ]
    tree, _ = _read(_tar(tarfile.GNU_FORMAT, members), tmp_path / "t.tar")
    nodes = _nodes(tree)
    assert nodes[b"/d"].type == DIR
    assert [p for p in nodes if p.startswith(b"/d/")] == [b"/d/new"]
    assert b"/d/old" not in nodes
    # And a directory replaced by a directory keeps what was in it.
    members = [
        (_info("d", kind=tarfile.DIRTYPE), None),
        (_info("d/old", size=1), b"o"),
        (_info("d", kind=tarfile.DIRTYPE, mode=0o700), None),
        (_info("d/new", size=1), b"n"),
    ]
    nodes = _nodes(_read(_tar(tarfile.GNU_FORMAT, members), tmp_path / "u.tar")[0])
    assert [p for p in nodes if p.startswith(b"/d/")] == [b"/d/new", b"/d/old"]
    assert nodes[b"/d"].mode & 0o777 == 0o700


@given(
    st.binary(min_size=8, max_size=8).map(bytes)
    | st.text("01234567 \0+-_x\t\x80", min_size=1, max_size=8).map(
        lambda t: t.encode("latin-1").ljust(8, b"\0")[:8]
    )
)
@settings(max_examples=3000, deadline=None)
def test_numeric_fields_read_as_number_reads_them(raw):
    """parse_header reads any 8-byte field as number() reads it: the same value, or the same error."""
    block = _header_fields(uid=raw)
    try:
        want = tar_member.number(raw, "uid", 108)
    except FormatError as exc:
        with pytest.raises(FormatError) as got:
            tar_member.parse_header(block, 0)
        assert str(got.value) == str(exc)
        return
    assert tar_member.parse_header(block, 0).uid == want


@pytest.mark.parametrize(
    "typeflag, linkname, dev",
    [
        (b"0", b"", (0, 0)),
        (b"2", b"../target", (0, 0)),
        (b"3", b"", (4, 64)),
        (b"4", b"", (8, 1)),
        (b"5", b"", (0, 0)),
    ],
)
def test_build_ustar_reads_back_in_tarfile_and_here(typeflag, linkname, dev):
    """Our plain ustar header, read by Python's tarfile (an independent reader) and by parse_header."""
    name = b"usr/share/doc/x" + bytes(range(0x20, 0x7F))[:60]
    hdr = tar_member.build_ustar(
        name,
        mode=0o4755,
        uid=1000,
        gid=0o7777777,
        size=0o77777777777 if typeflag == b"0" else 0,
        mtime=1700000000,
        typeflag=typeflag,
        linkname=linkname,
        devmajor=dev[0],
        devminor=dev[1],
    )
    assert (
        len(hdr) == 512
        and hdr[257:265] == b"ustar\x0000"
        and hdr[265:329] == bytes(64)
        and hdr[345:] == bytes(167)
    )
    info = tarfile.TarInfo.frombuf(hdr, "utf-8", "surrogateescape")  # checks the checksum too
    assert (
        info.name.encode(),
        info.mode,
        info.uid,
        info.gid,
        info.mtime,
        info.type,
        info.linkname.encode(),
    ) == (name, 0o4755, 1000, 0o7777777, 1700000000, typeflag, linkname)
    assert (info.devmajor, info.devminor) == dev
    ours = tar_member.parse_header(hdr, 0)
    assert (ours.name, ours.mode, ours.size, ours.devmajor, ours.devminor) == (name, 0o4755, info.size, *dev)
    if typeflag not in (b"3", b"4"):
        assert hdr[329:345] == bytes(16)  # the device fields stay empty, as tar(1) writes them
    assert tar_member.build_ustar(b"x" * 101, mode=0, uid=0, gid=0, size=0, mtime=0, typeflag=b"0") is None
    assert tar_member.build_ustar(b"x", mode=0, uid=0, gid=0, size=1 << 33, mtime=0, typeflag=b"0") is None
