"""A plain EROFS image read where it is looked at, when its bytes are not a local file to map.

A seekable EROFS layer's image is decoded frame by frame (nydus_inspect.seekable), a remote image is
fetched by range (chunks.source.RemoteBlob): the model reads either through chunks.source.SourceBytes, a
few pages at a time, so listing a directory and reading one file decode only the frames (fetch only the
ranges) their metadata and data lie in, and memory stays far below the image's size. What is read must be
what reading the image whole gives: the inner image of our seekable layers is the plain image ``pack
--format erofs`` writes (the zstd CLI holds test_seekable_write to that), so the plain image read through its
mmap is the reference for ls, cat and unpack; with erofs-utils 1.9.3 built (`make oracle`), mkfs.erofs's
images in every layout and compression are read both ways too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from fixtures_util import assert_one_line_error, fixture_tars_fixture, run_cli  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from test_check import tar

from nydus_inspect.chunks.source import LocalFile, RemoteBlob, SourceBytes
from nydus_inspect.errors import FormatError
from nydus_inspect.formats import seekable_erofs
from nydus_inspect.layer import KIND_EROFS, Layer, open_layer
from nydus_inspect.model import REG
from nydus_inspect.seekable import SeekableErofs

MIB = 1 << 20
#: The seekable layers' chunk size: small, so that the image is many frames.
CHUNK = 16 << 10


def _files() -> dict[str, bytes]:
    """Several MiB of incompressible data in files of a few frames each, and many small files, some with
    xattrs."""
    rnd = random.Random(11)
    files = {f"data/blob{i:02d}": rnd.randbytes(rnd.randrange(128 << 10, 384 << 10)) for i in range(48)}
    for i in range(300):
        files[f"etc/conf{i:03d}"] = (f"setting {i} = {rnd.random()}\n" * rnd.randrange(1, 300)).encode()
    files["etc/hostname"] = b"lazy\n"
    return files


FILES = _files()


def _tar_bytes() -> bytes:
    entries = [{"name": d, "type": "dir"} for d in ("data", "etc", "usr", "usr/bin")]
    for name, data in FILES.items():
        e = {"name": name, "data": data}
        if name.endswith("7"):
            e["xattrs"] = {"user.lazy": name, "trusted.overlay.opaque": "y"}
        entries.append(e)
    entries.append({"name": "usr/bin/sh", "type": "symlink", "link": "/etc/hostname"})
    entries.append({"name": "usr/bin/hostname-again", "type": "hardlink", "link": "etc/hostname"})
    return tar(entries)


def _pack(src: Path, out: Path, *opts: str) -> dict:
    proc = run_cli("pack", "--format", "erofs", src, "-o", out, "--json", *opts)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


#: Our writer's layouts: flat plain (containerd's -Enoinline_data), file tails inline, compressed extents.
VARIANTS = {"plain": (), "inline": ("--inline-data",), "lz4hc": ("--erofs-compression", "lz4hc")}


@pytest.fixture(scope="module")
def layers(tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """Per variant: (the plain image, the seekable layer of it in CHUNK-byte frames, pack's report)."""
    work = tmp_path_factory.mktemp("lazy")
    src = work / "tree.tar"
    src.write_bytes(_tar_bytes())
    out = {}
    for name, opts in VARIANTS.items():
        plain, seek = work / f"{name}.erofs", work / f"{name}.seekable"
        _pack(src, plain, *opts)
        res = _pack(src, seek, *opts, "--seekable", "--chunk-size", str(CHUNK))
        out[name] = (plain, seek, res)
    return out


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """The index of every frame a SeekableErofs decodes (not served from its cache of decoded frames)."""
    got: list[int] = []
    frame = SeekableErofs.frame

    def counted(self, index: int) -> bytes:
        if self._decoded.get(index) is None:
            got.append(index)
        return frame(self, index)

    monkeypatch.setattr(SeekableErofs, "frame", counted)
    return got


def _tree(layer: Layer) -> dict[bytes, tuple]:
    """Every entry's attributes, xattrs, target and bytes, through the model (what ls -R and cat read)."""
    r = layer.rafs
    out = {}
    for node in r.walk():
        data = b"".join(layer.read_file(node)) if node.type == REG else None
        out[node.path] = (
            node.type,
            node.mode,
            node.uid,
            node.gid,
            node.mtime,
            node.size,
            node.nlink,
            node.hardlink is not None,
            node.target,
            sorted(node.xattrs.items()),
            None if data is None else hashlib.sha256(data).hexdigest(),
            r.attrs(node.nid),
        )
    return out


# ---------------------------------------------------------------------------- laziness
def _ls_and_cat(seek: Path) -> tuple[list[bytes], bytes]:
    with open_layer(str(seek)) as layer:
        assert layer.kind == KIND_EROFS
        r = layer.rafs
        listed = sorted(d.name for d in r.readdir(r.lookup("/etc").nid))
        return listed, b"".join(layer.read_file(r.lookup("/etc/hostname")))


def test_one_file_decodes_a_few_frames_of_many(layers, decodes):
    """ls of a directory and cat of one small file decode a handful of the hundreds of frames, and memory
    stays far below the image (reading the image whole held all of it, decoded, and a copy while it grew)."""
    _, seek, res = layers["plain"]
    frames = res["frames"]
    size = res["uncompressed_size"]
    assert frames >= 600 and size > 10 * MIB
    _ls_and_cat(seek)  # the modules imported before memory is traced
    decodes.clear()
    tracemalloc.start()
    try:
        listed, data = _ls_and_cat(seek)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == b"lazy\n"
    assert listed == sorted(n.split("/")[1].encode() for n in FILES if n.startswith("etc/"))
    assert len(decodes) <= 8, f"{len(decodes)} of {frames} frames decoded: {decodes}"
    assert peak < size // 4, f"peak {peak} bytes for a {size}-byte image"


def test_a_large_file_decodes_its_own_frames(layers, decodes):
    """cat of one large file decodes the frames its data lies in, and few more (metadata)."""
    _, seek, res = layers["plain"]
    with open_layer(str(seek)) as layer:
        node = layer.rafs.lookup("/data/blob05")
        assert b"".join(layer.read_file(node)) == FILES["data/blob05"]
    own = -(-len(FILES["data/blob05"]) // CHUNK) + 1
    assert len(set(decodes)) <= own + 8, decodes
    assert len(decodes) == len(set(decodes)), "a frame decoded twice while reading one file"


@pytest.mark.parametrize("variant", ["plain", "lz4hc"])
def test_a_walk_of_the_tree_decodes_only_metadata_frames(layers, decodes, variant):
    """ls -R -l (every inode, directory and xattr, no file data) decodes the frames metadata lies in: our
    writer puts it before the data, so a few of them (with --inline-data the small files' bytes are among
    it)."""
    _, seek, res = layers[variant]
    with open_layer(str(seek)) as layer:
        r = layer.rafs
        nodes = list(r.walk())
        for n in nodes:
            r.attrs(n.nid)
    assert len(nodes) == len(FILES) + 7
    assert len(decodes) <= 8, f"{len(decodes)} of {res['frames']} frames decoded: {decodes}"


def test_info_decodes_the_superblock_frame_only(layers, decodes, tmp_path):
    """info of a seekable layer reads its superblock and its frames' table: the digests it gives are those
    the layer records (its chunk table's, its dm-verity tree's root), the ones pack reports, and the image
    is not hashed (that decoded every frame)."""
    from nydus_inspect.query import info

    _, seek, res = layers["plain"]
    with open_layer(str(seek)) as layer:
        got = info(layer)
    assert res["frames"] >= 600 and decodes == [0]
    assert got["sha256"] is None
    t = got["seekable"]
    assert t["chunk_table_digest"] == res["annotations"]["dev.containerd.erofs.zstd.chunk_digest"]
    assert t["frames"] == res["frames"] and t["stored_size"] == seek.stat().st_size
    assert t["dm_verity_root_digest"] is None
    verity = tmp_path / "verity.seekable"
    src = tmp_path / "tree.tar"
    src.write_bytes(_tar_bytes())
    vres = _pack(src, verity, "--seekable", "--chunk-size", str(CHUNK), "--dm-verity")
    decodes.clear()
    with open_layer(str(verity)) as layer:
        t = info(layer)["seekable"]
    assert decodes == [0]
    assert t["dm_verity_root_digest"] == vres["annotations"]["dev.containerd.erofs.dmverity.root_digest"]
    assert t["chunk_table_digest"] == vres["annotations"]["dev.containerd.erofs.zstd.chunk_digest"]


@pytest.mark.parametrize("verity", [False, True])
def test_opening_reads_a_few_bytes_of_many_frames(layers, tmp_path, monkeypatch, verity):
    """Opening a seekable layer of hundreds of frames finds its chunk table from its end (given where it is
    by the annotations, read there and checked against their digest), not by reading each frame's block
    headers: a few reads, whatever the number of frames."""
    src = tmp_path / "tree.tar"
    src.write_bytes(_tar_bytes())
    seek = tmp_path / "layer.seekable"
    res = _pack(src, seek, "--seekable", "--chunk-size", str(CHUNK), *(["--dm-verity"] if verity else []))
    assert res["frames"] >= 600
    reads = []
    pread = LocalFile.pread

    def counted(self, off, n, what="data"):
        reads.append((off, n))
        return pread(self, off, n, what)

    monkeypatch.setattr(LocalFile, "pread", counted)
    ann = res["annotations"]
    offset = int(ann["dev.containerd.erofs.zstd.chunk_table_offset"])
    for kw in ({}, {"table_offset": offset, "chunk_digest": ann["dev.containerd.erofs.zstd.chunk_digest"]}):
        reads.clear()
        s = SeekableErofs(str(seek), **kw)
        try:
            assert s.table.offset == offset and len(s.table.frames) == res["frames"]
            assert len(reads) <= (16 if not kw else 6), reads
            assert sum(n for _, n in reads) < 256 << 10
        finally:
            s.close()
    with pytest.raises(FormatError, match="annotation"):
        SeekableErofs(str(seek), table_offset=offset, chunk_digest="sha512:" + "0" * 128)
    with pytest.raises(FormatError, match="chunk table"):
        SeekableErofs(str(seek), table_offset=offset - 1)


def test_a_remote_image_fetches_only_what_is_read(layers):
    """A plain image behind a range-reading source (a registry blob): listing and one file fetch a small
    part of it, and give the bytes the mmap of the file gives."""
    plain, _, _ = layers["plain"]
    data = plain.read_bytes()
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, size: int) -> bytes:
        calls.append((offset, size))
        return data[offset : offset + size]

    with Layer(str(plain), source=RemoteBlob(str(plain), len(data), fetch)) as layer:
        assert layer.kind == KIND_EROFS
        r = layer.rafs
        assert isinstance(r.buf, SourceBytes)
        names = [d.name for d in r.readdir(r.root_nid)]
        small = b"".join(layer.read_file(r.lookup("/etc/conf123")))
    fetched = sum(n for _, n in calls)
    assert names == [b"data", b"etc", b"usr"] and small == FILES["etc/conf123"]
    assert fetched < len(data) // 8, f"{fetched} of {len(data)} bytes fetched"


# ---------------------------------------------------------------------------- the same bytes
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_view_reads_what_the_whole_image_reads(layers, variant):
    """The model over the seekable layer, and over the plain file read through the view (a LocalFile given
    as the source), gives what it gives over the mmap of the plain image, which is the inner image."""
    plain, seek, _ = layers[variant]
    inner = SeekableErofs(str(seek))
    try:
        assert inner.pread(0, inner.size) == plain.read_bytes()
    finally:
        inner.close()
    with open_layer(str(plain)) as layer:
        assert not isinstance(layer.rafs.buf, SourceBytes)
        want = _tree(layer)
    with open_layer(str(seek)) as layer:
        assert isinstance(layer.rafs.buf, SourceBytes)
        assert _tree(layer) == want
    with Layer(str(plain), source=LocalFile(str(plain))) as layer:
        assert _tree(layer) == want
    assert {p.decode()[1:] for p, e in want.items() if e[0] == REG} >= set(FILES)


@pytest.mark.parametrize("variant", VARIANTS)
def test_commands_give_the_same_output(layers, variant, tmp_path):
    """ls -R -l, info's superblock, cat and unpack of the seekable layer are those of the plain image."""
    plain, seek, _ = layers[variant]
    for argv in (("ls", "-R", "-l"), ("ls", "-R", "--json")):
        got, want = run_cli(*argv, seek), run_cli(*argv, plain)
        assert got.returncode == 0 and got.stdout == want.stdout
    got = json.loads(run_cli("info", "--json", seek).stdout)["erofs"]
    assert got == json.loads(run_cli("info", "--json", plain).stdout)["erofs"]
    for name in ("etc/hostname", "data/blob17", "usr/bin/sh"):
        proc = run_cli("cat", seek, "/" + name)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == FILES[name if name != "usr/bin/sh" else "etc/hostname"]
    assert run_cli("unpack", seek, "--to-dir", tmp_path / "out").returncode == 0
    for name, data in FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == data, name


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("step", ["unpack", "verify"])
def test_whole_image_commands_hold_no_copy_of_it(layers, tmp_path, step):
    """unpack and verify of the seekable layer read every frame, and hold what they hold for the plain image
    (unpack's read-ahead window, here the whole of this small image) and little more: a few frames and pages,
    never the image decoded whole."""
    from nydus_inspect.unpack import to_dir
    from nydus_inspect.verify import verify

    plain, seek, res = layers["plain"]
    size = res["uncompressed_size"]
    runs = iter(range(4))

    def run(path: Path) -> None:
        with open_layer(str(path)) as layer:
            if step == "unpack":
                to_dir(layer, str(tmp_path / f"out{next(runs)}"))
            else:
                assert verify(layer).ok

    run(seek)  # the modules imported before memory is traced
    base = _peak(lambda: run(plain))
    got = _peak(lambda: run(seek))
    assert got < base + size // 4, f"{step}: peak {got} bytes, {base} for the plain image of {size} bytes"
    if step == "unpack":
        assert (tmp_path / "out2" / "data" / "blob03").read_bytes() == FILES["data/blob03"]


# ---------------------------------------------------------------------------- the view itself
class _Source:
    """A BlobSource over bytes, counting its reads."""

    path = "mem"

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.reads = data, len(data), []

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(what, "outside", offset=offset)
        self.reads.append((offset, size))
        return self.data[offset : offset + size]


_DATA = random.Random(3).randbytes(100_000)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.integers(-len(_DATA) - 10, len(_DATA) + 10),
            st.tuples(
                st.one_of(st.none(), st.integers(-len(_DATA) - 10, len(_DATA) + 10)),
                st.one_of(st.none(), st.integers(-len(_DATA) - 10, len(_DATA) + 10)),
            ),
        ),
        max_size=20,
    )
)
def test_the_view_indexes_and_slices_as_bytes_do(ops):
    view = SourceBytes(_Source(_DATA))
    view.PAGES = 4  # evictions within a few reads
    assert len(view) == len(_DATA)
    for op in ops:
        if isinstance(op, int):
            if -len(_DATA) <= op < len(_DATA):
                assert view[op] == _DATA[op]
            else:
                with pytest.raises(IndexError):
                    view[op]
        else:
            got = view[op[0] : op[1]]
            assert isinstance(got, bytes) and got == _DATA[op[0] : op[1]]
        assert len(view._pages) <= 4


def test_the_view_reads_pages_once_and_large_slices_directly():
    src = _Source(_DATA)
    view = SourceBytes(src)
    page = SourceBytes.PAGE
    assert view[10:20] == _DATA[10:20] and view[30] == _DATA[30] and view[page - 2 : page + 2]
    assert src.reads == [(0, page), (page, page)]  # one read a page, kept
    big = SourceBytes.DIRECT * page + 100
    assert view[5 : 5 + big] == _DATA[5 : 5 + big]
    assert src.reads[-1] == (5, big) and len(view._pages) == 2  # one read, not kept
    with pytest.raises(TypeError):
        view[0:10:2]
    with pytest.raises(TypeError):
        struct.unpack_from("<I", view, 0)  # no buffer: parsers slice first
    with pytest.raises(TypeError):
        bytes(view)  # not the whole source a byte at a time


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> list[bytes]:
    """Small images of every layout our writer makes (of entries of every kind, xattrs among them)."""
    work = tmp_path_factory.mktemp("small")
    rnd = random.Random(5)
    entries = [{"name": "d", "type": "dir"}, {"name": "d/e", "type": "dir"}]
    for i in range(40):
        entries.append(
            {
                "name": f"d/{'e/' if i % 3 else ''}f{i}",
                "data": (b"text %d " % i) * rnd.randrange(0, 2000) + rnd.randbytes(rnd.randrange(0, 300)),
                **({"xattrs": {"user.k": f"v{i}", "trusted.overlay.opaque": "y"}} if i % 4 == 0 else {}),
            }
        )
    entries.append({"name": "d/link", "type": "symlink", "link": "e/f1"})
    entries.append({"name": "d/hard", "type": "hardlink", "link": "d/f3"})
    (work / "t.tar").write_bytes(tar(entries))
    out = []
    for name, opts in VARIANTS.items():
        _pack(work / "t.tar", work / name, *opts)
        out.append((work / name).read_bytes())
    return out


def _outcome(buf) -> object:
    """What the model makes of an image in ``buf``: every node, each file's chunks and its compressed extents
    decoded from ``buf``, the walk's errors; or the error that stops it."""
    from nydus_inspect import erofs_codecs
    from nydus_inspect.erofs import FRAGMENT_BLOB, Z_BLOB, Z_PARTIAL, Erofs

    def said(exc: Exception) -> tuple[str, str]:
        # struct words its errors by the call (unpack_from or unpack): only the kind must agree.
        return ("error", str(exc) if isinstance(exc, FormatError) else type(exc).__name__)

    out: list = []
    try:
        r = Erofs(buf)
        out.append(repr(r.esb))
        for i, node in enumerate(r.walk(on_error=lambda e: out.append((e.path, said(e.error))))):
            if i > 300:
                break
            out.append(node.to_json())
            if node.type != REG:
                continue
            try:
                out.append(r.attrs(node.nid))
                for c in r.chunks(node):
                    out.append((c.blob_index, c.compressed_offset, c.compressed_size, c.uncompressed_size))
                    if c.blob_index == FRAGMENT_BLOB or c.blob_index < Z_BLOB:
                        continue
                    fmt, partial = (c.blob_index - Z_BLOB) % Z_PARTIAL, c.blob_index - Z_BLOB >= Z_PARTIAL
                    raw = bytes(buf[c.compressed_offset : c.compressed_offset + c.compressed_size])
                    got = erofs_codecs.decode(
                        raw, fmt, c.uncompressed_size, partial, c.uncompressed_offset, 0, r.block_size
                    )
                    out.append(hashlib.sha256(got).hexdigest())
            except Exception as exc:  # what is raised, whatever it is, is what is compared
                out.append(said(exc))
    except Exception as exc:
        out.append(said(exc))
    return out


@settings(max_examples=150, deadline=None)
@given(
    which=st.integers(0, len(VARIANTS) - 1),
    flips=st.lists(st.tuples(st.integers(0, 16383), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_a_damaged_image_reads_the_same_through_the_view(small_images, which, flips):
    """Bytes changed in an image's metadata (its first 16 KiB: superblock, inodes, xattrs, directories,
    indexes): the model over the view gives what it gives over the bytes, tree or error alike."""
    data = bytearray(small_images[which])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    data = bytes(data)
    assert _outcome(SourceBytes(_Source(data))) == _outcome(data)


def test_an_undamaged_image_reads_the_same_through_the_view(small_images):
    """(And the outcome compared above is a whole tree, not an error.)"""
    for data in small_images:
        got = _outcome(SourceBytes(_Source(data)))
        assert got == _outcome(data)
        errors = [x for x in got if isinstance(x, tuple) and (x[0] == "error" or isinstance(x[-1], tuple))]
        assert not errors and len(got) > 40, got


# ---------------------------------------------------------------------------- bad layers
def _frames(image: bytes, chunk: int, told_chunk: int, told_size: int) -> bytes:
    """A seekable layer of ``image`` in ``chunk``-byte frames whose chunk table says ``told_chunk`` and
    ``told_size`` (a table that lies, when they differ)."""
    cctx = zstandard.ZstdCompressor(write_content_size=True)
    out, offsets = bytearray(), []
    for pos in range(0, len(image), chunk):
        offsets.append(len(out))
        out += cctx.compress(image[pos : pos + chunk])
    payload = seekable_erofs.HEADER.pack(seekable_erofs.TABLE_MAGIC, 1, told_size, told_chunk, 0, 0)
    payload += b"".join(struct.pack("<Q", o) for o in offsets)
    return bytes(out) + struct.pack("<II", seekable_erofs.SKIPPABLE_MIN, len(payload)) + payload


def test_a_chunk_table_claiming_huge_frames_is_one_line_and_bounded(layers, tmp_path):
    """A table that calls each small frame 64 MiB (as many entries as frames, so it parses) makes an image of
    gigabytes on paper: the first frame read is found short, in one line, without allocating those sizes."""
    plain, _, _ = layers["plain"]
    image = plain.read_bytes()
    count = -(-len(image) // CHUNK)
    huge = seekable_erofs.MAX_CHUNK
    bad = tmp_path / "lying.seekable"
    bad.write_bytes(_frames(image, CHUNK, huge, count * huge))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"frame \d+ holds"):
            with open_layer(str(bad)) as layer:
                list(layer.rafs.walk())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, peak
    assert_one_line_error(run_cli("ls", "-R", bad), 2, "holds", "the chunk table says")


def test_an_image_cut_short_inside_its_frames_is_one_line(layers, tmp_path):
    """Frames that hold only the image's first blocks: the superblock reads, the tree past them does not,
    and says so in one line."""
    plain, _, _ = layers["plain"]
    image = plain.read_bytes()[: 3 * 4096]
    bad = tmp_path / "short.seekable"
    bad.write_bytes(_frames(image, 4096, 4096, len(image)))
    with open_layer(str(bad)) as layer:
        assert layer.kind == KIND_EROFS and layer.size == len(image)
    assert_one_line_error(run_cli("ls", "-R", bad), 2)
    assert_one_line_error(run_cli("cat", bad, "/data/blob00"), 2)
    cut = tmp_path / "cut.seekable"
    cut.write_bytes((layers["plain"][1]).read_bytes()[: os.path.getsize(layers["plain"][1]) // 2])
    assert_one_line_error(run_cli("ls", cut), 2)


# ---------------------------------------------------------------------------- mkfs.erofs's images
def _mkfs_cases():
    from test_erofs_native import COMPRESSED, LAYOUTS

    return {**LAYOUTS, **COMPRESSED}


@pytest.mark.erofs
@pytest.mark.parametrize("case", list(_mkfs_cases()))
def test_mkfs_images_read_the_same_through_the_view(erofs_utils, fixture_tars, tmp_path, case):
    """Every layout and compression of mkfs.erofs (chunk indexes and block maps, shared xattrs and long
    prefixes, compact indexes, fragments in the packed inode, inline pclusters) reads through the view as
    through the mmap: from the file, and framed as a seekable layer."""
    from test_seekable import make_seekable

    image = erofs_utils.mkfs(
        tmp_path / "img.erofs", fixture_tars["every-type.tar"], "--tar=f", *_mkfs_cases()[case]
    )
    with open_layer(str(image)) as layer:
        want = _tree(layer)
    with Layer(str(image), source=LocalFile(str(image))) as layer:
        assert _tree(layer) == want
    seek = tmp_path / "img.seekable"
    seek.write_bytes(make_seekable(image.read_bytes(), 4096))
    with open_layer(str(seek)) as layer:
        assert isinstance(layer.source, SeekableErofs)
        assert _tree(layer) == want
