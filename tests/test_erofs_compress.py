"""Compressed EROFS layers written natively (``pack --format erofs --erofs-compression SPEC``), judged by
erofs-utils 1.9.3 and the kernel.

For each algorithm, every image must pass ``fsck.erofs`` and extract (``fsck.erofs --extract``) to the tree
the uncompressed image of the same tar extracts to, every file byte for byte the tar's; our reader must read
it as fsck.erofs extracts it (test_erofs_native's check_image: the model, ``unpack`` and ``verify``);
``dump.erofs`` must name the algorithm and count the compressed files; a compressible tar must give a
smaller image; and the kernel must mount it and serve the same bytes, where it can mount what mkfs.erofs
writes with that algorithm (otherwise the test says why it skips). A pcluster we damage must be found by
``verify`` and be a one-line error for ``cat``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from fixtures_util import assert_one_line_error, debian_rootfs_tar, fixture_tars_fixture, run_cli  # noqa: F401
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_erofs_native import EROFS_AS_ROOT, check_image, extracted_tree
from test_erofs_write import assert_veritysetup_agrees, pack
from tree_strategies import EXTENT_SIZES, trees, write_tree_tar

from nydus_inspect.formats import erofs_zmap
from nydus_inspect.layer import open_layer
from nydus_inspect.model import REG

pytestmark = EROFS_AS_ROOT

#: Each algorithm we write, with the name dump.erofs gives it.
SPECS = {"lz4": "lz4", "lz4hc,12": "lz4", "deflate,6": "deflate", "zstd,10": "zstd", "lzma,6": "lzma"}
FIXTURES = ["every-type.tar", "whiteouts.tar", "xattrs.tar", "dedup.tar", "global-pax.tar"]
BS = 4096
EXTENT = 16 * BS
#: Sizes at the edges of blocks and of 64 KiB extents.
EDGE_SIZES = [0, 1, BS - 1, BS, BS + 1, 2 * BS, EXTENT - 1, EXTENT, EXTENT + 1, 3 * EXTENT + 5, (1 << 20) + 7]


def _text(n: int, seed: bytes) -> bytes:
    line = b"the layer " + seed + b" holds this line again and again\n"
    return (line * (n // len(line) + 1))[:n]


def _noise(n: int, seed: bytes) -> bytes:
    return hashlib.shake_256(seed).digest(n)


def _mixed(n: int, seed: bytes) -> bytes:
    """Noise and text every 48 KiB: extents that compress beside extents that do not."""
    return b"".join(
        (_noise if (i // 49152) % 2 else _text)(min(49152, n - i), seed + b"%d" % i)
        for i in range(0, n, 49152)
    )


def edge_tar(path: Path) -> Path:
    """Files of every edge size, compressible, incompressible and mixed, plus a hard link and a symlink."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:

        def add(name: str, data: bytes | None = None, **kw) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o644
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)

        add("d", type=tarfile.DIRTYPE, mode=0o755)
        for size in EDGE_SIZES:
            for kind, make in (("text", _text), ("noise", _noise), ("mixed", _mixed)):
                add(f"d/{kind}-{size}", make(size, b"%s-%d" % (kind.encode(), size)))
        add("d/link-to-text", type=tarfile.LNKTYPE, linkname=f"d/text-{3 * EXTENT + 5}")
        add("d/sym", type=tarfile.SYMTYPE, linkname="text-1")
    return path


def tar_files(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}


def plain_tree(erofs_utils, src: Path, work: Path) -> dict:
    """What fsck.erofs extracts from the uncompressed image of ``src`` (test_erofs_write holds it to
    mkfs.erofs's)."""
    image = work / "plain.erofs"
    pack(src, image)
    return extracted_tree(erofs_utils.extract(image, work / "plain-x"))


def check_compressed(erofs_utils, src: Path, work: Path, spec: str, *opts: str) -> dict:
    """Our image of ``src`` compressed with ``spec``: it passes fsck.erofs, extracts as the uncompressed one
    does (file bytes the tar's), and we read it as fsck.erofs extracts it; returns pack's JSON."""
    work.mkdir(parents=True, exist_ok=True)
    image = work / "z.erofs"
    res = pack(src, image, "--erofs-compression", spec, *opts)
    # The algorithm as given, with its default level where it has one and none was given.
    assert res["compression"]["algorithm"].split(",")[0] == spec.split(":")[0].split(",")[0]
    erofs_utils.run("fsck.erofs", image)
    # Whiteouts become overlayfs ones (--aufs): the tar's files are then not the image's, name for name.
    with tarfile.open(src) as tf:
        whiteouts = any(os.path.basename(m.name).startswith(".wh.") for m in tf.getmembers())
    got = check_image(erofs_utils, image, work / "check", tar=None if whiteouts else src)
    assert got == plain_tree(erofs_utils, src, work)
    return res


def dump_says(erofs_utils, image: Path) -> dict[str, str]:
    """``dump.erofs -s -S``'s "Filesystem X: value" lines."""
    out = erofs_utils.run("dump.erofs", "-s", "-S", image).stdout.decode()
    return {m[1].strip(): m[2].strip() for m in re.finditer(r"^Filesystem ([^:]+):\s*(.*)$", out, re.M)}


# ---------------------------------------------------------------------------- the kernel's EROFS


def _kernel_problem() -> str | None:
    if os.geteuid() != 0:
        return "mounting needs root"
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1:] == ["erofs"] for line in f):
                return "the kernel has no EROFS (/proc/filesystems)"
    except OSError as exc:
        return f"/proc/filesystems: {exc}"
    if not shutil.which("mount"):
        return "no mount program"
    return None


def _try_mount(image: Path, mnt: Path) -> str | None:
    """Mount ``image`` read-only through a loop device at ``mnt``; None, or why not."""
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "erofs", "-o", "loop,ro", str(image), str(mnt)], capture_output=True
    )
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).decode(errors="replace").strip()


@contextlib.contextmanager
def _mounted(image: Path, mnt: Path):
    why = _try_mount(image, mnt)
    assert why is None, f"the kernel does not mount {image}: {why}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


_KERNEL_ALGS: dict[str, str | None] = {}


def kernel_mount_problem(erofs_utils, spec: str, work: Path) -> str | None:
    """Why the kernel cannot be a judge of ``spec`` images: no EROFS, no loop mounts, or it refuses what
    mkfs.erofs itself writes with that algorithm. Asked once per algorithm."""
    problem = _kernel_problem()
    if problem:
        return problem
    if spec not in _KERNEL_ALGS:
        probe = work / "probe"
        (probe / "src").mkdir(parents=True, exist_ok=True)
        (probe / "src" / "f").write_bytes(_text(3 * EXTENT, b"probe"))
        image = erofs_utils.mkfs(probe / "mkfs.erofs", probe / "src", f"-z{spec}", "-C65536")
        why = _try_mount(image, probe / "mnt")
        if why is None:
            ok = (probe / "mnt" / "f").read_bytes() == _text(3 * EXTENT, b"probe")
            subprocess.run(["umount", str(probe / "mnt")], capture_output=True)
            why = None if ok else "the kernel misreads mkfs.erofs's own image"
        else:
            why = f"the kernel does not mount mkfs.erofs -z{spec}'s own image ({why})"
        _KERNEL_ALGS[spec] = why
    return _KERNEL_ALGS[spec]


def assert_kernel_serves(erofs_utils, image: Path, want: dict[str, bytes], spec: str, work: Path) -> None:
    problem = kernel_mount_problem(erofs_utils, spec, work)
    if problem:
        print(f"kernel mount of {spec} skipped: {problem}")  # the test still judged fsck.erofs and ours
        return
    with _mounted(image, work / "kmnt") as mnt:
        got = {name: (mnt / name).read_bytes() for name in want}
    assert got == want


# ---------------------------------------------------------------------------- judges


@pytest.mark.parametrize("spec", SPECS)
def test_edge_sizes(erofs_utils, tmp_path, spec):
    """Empty, 1-byte, one-block and extent-edge files, compressible, incompressible and mixed."""
    src = edge_tar(tmp_path / "edge.tar")
    res = check_compressed(erofs_utils, src, tmp_path / "w", spec)
    image = tmp_path / "w" / "z.erofs"
    files = tar_files(src)
    # Every text and mixed file over a block shrinks; no noise file does; nothing of a block or less does.
    want_z = {n for n, d in files.items() if len(d) > BS and not n.startswith("d/noise")}
    assert res["compression"]["files"] == len(want_z)
    want_z.add("d/link-to-text")  # a second name of a compressed file
    with open_layer(str(image)) as layer:
        for node in layer.rafs.walk():
            zs = layer.rafs.compressed_extents(node) if node.type == REG else None
            name = node.path.decode().lstrip("/")
            if name in want_z:
                assert zs and any(z.fmt <= erofs_zmap.ALG_ZSTD for z in zs), name
            elif node.type == REG:
                assert zs is None, name
    dump = dump_says(erofs_utils, image)
    assert dump["compr_algs"] == SPECS[spec]
    assert int(dump["compressed files"]) == len(want_z)
    assert int(dump["total file size"].split()[0]) < int(dump["total original file size"].split()[0])
    assert res["size"] < (tmp_path / "w" / "plain.erofs").stat().st_size
    assert_kernel_serves(erofs_utils, image, files, spec, tmp_path)
    proc = run_cli("info", image)
    assert proc.returncode == 0, proc.stderr.decode()
    assert re.search(rf"compr algs\s+{SPECS[spec]}\n", proc.stdout.decode())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_tars(erofs_utils, fixture_tars, tmp_path, name, spec):
    check_compressed(erofs_utils, fixture_tars[name], tmp_path, spec)


@pytest.mark.parametrize("spec", SPECS)
def test_generated_trees(erofs_utils, tmp_path_factory, spec):
    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(entries=trees(sizes=EXTENT_SIZES, mixed=True))
    def run(entries):
        # test_erofs_write says why: a name that is just ".wh." is an empty whiteout.
        assume(not any(part.startswith(b".wh.") for e in entries for part in e[0].split(b"/")))
        work = tmp_path_factory.mktemp("tree")
        write_tree_tar(work / "tree.tar", entries)
        check_compressed(erofs_utils, work / "tree.tar", work, spec)
        shutil.rmtree(work)

    run()


def test_dm_verity_over_the_compressed_image(erofs_utils, tmp_path):
    """The hash tree covers the compressed image: veritysetup agrees, fsck.erofs still reads it."""
    src = edge_tar(tmp_path / "edge.tar")
    image = tmp_path / "v.erofs"
    res = pack(src, image, "--erofs-compression", "lz4hc,12", "--dm-verity")
    assert res["compression"]["files"] > 0
    assert_veritysetup_agrees(image, res, tmp_path)
    erofs_utils.run("fsck.erofs", image)
    check_image(erofs_utils, image, tmp_path / "check", tar=src)
    proc = run_cli("verify", image, "--root-hash", res["dm_verity"]["root_hash"])
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_inline_data_with_compression(erofs_utils, tmp_path):
    """--inline-data: the files that stay flat pack their tails after their inodes; the others are
    compressed as without it."""
    src = edge_tar(tmp_path / "edge.tar")
    res = check_compressed(erofs_utils, src, tmp_path / "w", "zstd", "--inline-data")
    assert res["compression"]["files"] > 0


def test_seekable_layer_of_a_compressed_image(erofs_utils, tmp_path):
    """--seekable frames the compressed image as it frames a plain one: the zstd CLI gives back an image
    that fsck.erofs extracts as the plain one, and we read the layer itself the same."""
    from test_seekable_write import zstd_decompress

    src = edge_tar(tmp_path / "edge.tar")
    layer = tmp_path / "z.seekable"
    proc = run_cli(
        "pack", "--format", "erofs", "--seekable", "--erofs-compression", "lz4hc", src, "-o", layer
    )
    assert proc.returncode == 0, proc.stderr.decode()
    inner = tmp_path / "inner.erofs"
    zstd_decompress(layer, inner)
    assert dump_says(erofs_utils, inner)["compr_algs"] == "lz4"
    got = check_image(erofs_utils, inner, tmp_path / "check", tar=src)
    assert got == plain_tree(erofs_utils, src, tmp_path)
    ours = tmp_path / "ours"
    proc = run_cli("unpack", layer, "--to-dir", ours)
    assert proc.returncode == 0, proc.stderr.decode()
    assert extracted_tree(ours) == got


@pytest.mark.slow
def test_debian_rootfs(erofs_utils, tmp_path):
    """The Debian minbase tar of the benches: what fsck.erofs and the kernel make of it."""
    src = debian_rootfs_tar()
    res = check_compressed(erofs_utils, src, tmp_path, "lz4hc,12")
    image = tmp_path / "z.erofs"
    assert res["size"] < (tmp_path / "plain.erofs").stat().st_size
    dump = dump_says(erofs_utils, image)
    # dump.erofs counts names; pack counts files (inodes), and the rootfs has hard links.
    with open_layer(str(image)) as layer:
        names = [n for n in layer.rafs.walk() if n.type == REG and layer.rafs.compressed_extents(n)]
    assert len({n.nid for n in names}) == res["compression"]["files"]
    assert dump["compr_algs"] == "lz4" and int(dump["compressed files"]) == len(names)
    files = {n: d for n, d in tar_files(src).items() if len(d) > EXTENT}
    assert_kernel_serves(erofs_utils, image, files, "lz4hc,12", tmp_path)


@pytest.mark.parametrize("spec", SPECS)
def test_convert_to_compressed_erofs(erofs_utils, fixture_tars, tmp_path, spec):
    """convert --to erofs --erofs-compression: each layer as pack writes it with the same SPEC."""
    from test_convert import LayoutWriter, blob, read_json

    tar = edge_tar(tmp_path / "edge.tar").read_bytes()
    src = tmp_path / "src"
    w = LayoutWriter(src)
    w.index([w.image([tar, fixture_tars["every-type.tar"].read_bytes()], ["gzip", "none"])])
    out = tmp_path / "out"
    proc = run_cli("convert", src, out, "--to", "erofs", "--erofs-compression", spec)
    assert proc.returncode == 0, proc.stderr.decode()
    index = json.loads((out / "index.json").read_text())
    manifest = read_json(out, index["manifests"][0])
    layer = manifest["layers"][0]
    image = tmp_path / "layer0.erofs"
    image.write_bytes(blob(out, layer))
    (tmp_path / "layer0.tar").write_bytes(tar)
    assert dump_says(erofs_utils, image)["compr_algs"] == SPECS[spec]
    got = check_image(erofs_utils, image, tmp_path / "check", tar=tmp_path / "layer0.tar")
    assert got == plain_tree(erofs_utils, tmp_path / "layer0.tar", tmp_path)


# ---------------------------------------------------------------------------- damage and bad usage


@pytest.mark.parametrize("spec", SPECS)
def test_damaged_pcluster_is_found(tmp_path, spec):
    """The head of a compressed pcluster's stream overwritten: ``verify`` fails, ``cat`` is one line."""
    src = edge_tar(tmp_path / "edge.tar")
    image = tmp_path / "z.erofs"
    pack(src, image, "--erofs-compression", spec)
    name = f"d/text-{3 * EXTENT + 5}"
    with open_layer(str(image)) as layer:
        node = layer.rafs.lookup(b"/" + name.encode())
        z = next(z for z in layer.rafs.compressed_extents(node) if z.fmt <= erofs_zmap.ALG_ZSTD)
    data = bytearray(image.read_bytes())
    pcluster = data[z.offset : z.offset + z.stored]
    start = len(pcluster) - len(pcluster.lstrip(b"\0"))
    # The stream's first half replaced by zeros: what is left decodes to nothing of the right length.
    half = (len(pcluster) - start) // 2
    data[z.offset + start : z.offset + start + half] = bytes(half)
    bad = tmp_path / "bad.erofs"
    bad.write_bytes(bytes(data))
    proc = run_cli("verify", bad)
    assert proc.returncode != 0, proc.stdout.decode()
    assert b"pcluster" in proc.stdout + proc.stderr
    assert_one_line_error(run_cli("cat", bad, name), 2, "pcluster")


BAD_SPECS = {
    "": "empty",
    "gzip": "unknown algorithm",
    "lz4,3": "takes no level",
    "lz4hc,13": "out of range",
    "deflate,10": "out of range",
    "zstd,23": "out of range",
    "lzma,10": "out of range",
    "zstd,fast": "not a number",
    "lz4hc,12:bogus": "unknown algorithm",
    "lzma:lz4hc,99": "out of range",
}


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_spec_is_one_line(fixture_tars, tmp_path, spec):
    out = tmp_path / "out.erofs"
    proc = run_cli(
        "pack", "--format", "erofs", "--erofs-compression", spec, fixture_tars["xattrs.tar"], "-o", out
    )
    assert_one_line_error(proc, 2, "--erofs-compression", BAD_SPECS[spec])
    assert not out.exists()


def test_compression_needs_erofs_output(fixture_tars, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("pack", "--erofs-compression", "lz4", fixture_tars["xattrs.tar"], "-o", out)
    assert_one_line_error(proc, 2, "--erofs-compression", "--format erofs")
    proc = run_cli("convert", tmp_path / "none", out, "--erofs-compression", "lz4")
    assert_one_line_error(proc, 2, "--erofs-compression")


def test_second_algorithm_is_accepted_and_unused(erofs_utils, tmp_path):
    """mkfs.erofs's ``lzma:lz4hc,12`` form: the first algorithm compresses everything."""
    src = edge_tar(tmp_path / "edge.tar")
    image = tmp_path / "z.erofs"
    res = pack(src, image, "--erofs-compression", "zstd:lz4hc,12")
    assert res["compression"]["algorithm"] == "zstd,3"
    assert dump_says(erofs_utils, image)["compr_algs"] == "zstd"


# ---------------------------------------------------------------------------- the index encoder


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 16), st.booleans(), st.integers(1, 15)), min_size=1, max_size=12),
    st.integers(0, BS - 1),
    st.booleans(),
)
def test_full_map_reads_back(shape, tail, big):
    """What build_full_map writes, the reader's legacy-index decoder reads back as the same extents: every
    pcluster a whole number of blocks from a block boundary, the last one possibly short."""
    pcs = []
    for blocks, plain, stored in shape:
        if plain:
            pcs += [erofs_zmap.Pcluster(BS, 1, True)] * blocks
        else:
            pcs.append(erofs_zmap.Pcluster(blocks * BS, min(stored, blocks) if big else 1, False))
    if tail:
        last = pcs[-1]
        length = last.length - BS + tail
        # A pcluster of several blocks is always smaller than the blocks its extent spans.
        blocks = last.blocks if last.blocks < -(-length // BS) else 1
        pcs[-1] = erofs_zmap.Pcluster(length, blocks, last.plain)
    size = sum(pc.length for pc in pcs)
    blkaddr = 100
    zmap = erofs_zmap.build_full_map(pcs, blkaddr, erofs_zmap.ALG_ZSTD, BS, big)
    assert len(zmap) == erofs_zmap.full_map_size(size, BS)
    buf = bytes(64) + zmap  # an inode ending at 64, 8-byte aligned
    got = erofs_zmap.extents(buf, 1, erofs_zmap.LAYOUT_COMPRESSED_FULL, size, 64, BS)
    want, at, blk = [], 0, blkaddr
    for pc in pcs:
        fmt = erofs_zmap.FMT_SHIFTED if pc.plain else erofs_zmap.ALG_ZSTD
        want.append(erofs_zmap.ZExtent(at, pc.length, blk * BS, pc.blocks * BS, fmt, False))
        at += pc.length
        blk += pc.blocks
    assert got == want
