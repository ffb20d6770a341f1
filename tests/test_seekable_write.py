"""Seekable EROFS layers written (``pack --format erofs --seekable``, ``convert --to erofs --seekable``).

The judges are not ours: the ``zstd`` CLI, which knows nothing of the chunk table, must decompress a layer to
exactly the plain image ``pack --format erofs`` writes (it skips skippable frames), and ``zstd -lv`` must
count one data frame per chunk and the skippable frames; ``fsck.erofs --extract`` (erofs-utils 1.9.3) of
that image must give the tree it gives for mkfs.erofs's image of the same tar; the chunk table and frame
boundaries are read here by hand from the layout pull request 12703 describes, and each frame decoded on
its own by the zstd library; ``veritysetup verify`` must accept the dm-verity payload against the image
with the root hash we report, and ``veritysetup format --hash sha512`` must write the same tree. Our own
reader must then read the layer (info, ls, cat, unpack, verify, the mount against erofsfuse of the image),
and verify must name a bit flipped in a frame, in the chunk table and in the hash tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import test_mount
import zstandard
from fixtures_util import assert_one_line_error, debian_rootfs_tar, fixture_tars_fixture, run_cli  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_erofs_native import EROFS_AS_ROOT, assert_same_tree, check_image, extracted_tree, our_tree
from test_erofs_write import CONTAINERD, plain_tar, veritysetup, veritysetup_format
from tree_strategies import trees, write_tree_tar

fuse = test_mount.fuse
mounts = test_mount.mounts

pytestmark = EROFS_AS_ROOT

MIB = 1 << 20
# The pull request's facts, written out here rather than imported from the code under test.
MEDIA_TYPE = "application/vnd.erofs.layer.v1+zstd"
SKIPPABLE = 0x184D2A50
TABLE_MAGIC = 0xCDE4EC67
A_TABLE_OFFSET = "dev.containerd.erofs.zstd.chunk_table_offset"
A_TABLE_DIGEST = "dev.containerd.erofs.zstd.chunk_digest"
A_VERITY_OFFSET = "dev.containerd.erofs.dmverity.offset"
A_VERITY_ROOT = "dev.containerd.erofs.dmverity.root_digest"
TARS = ["every-type.tar", "whiteouts.tar", "xattrs.tar", "dedup.tar", "global-pax.tar", "every-type.tar.zst"]


def zstd() -> str:
    path = shutil.which("zstd")
    if path is None:
        reason = "the zstd CLI is not installed (apt-get install zstd; `make deps` does)"
        if os.environ.get("NYDUS_REQUIRE_ORACLE") == "1":
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return path


def zstd_decompress(layer: Path, out: Path) -> bytes:
    subprocess.run([zstd(), "-d", "-q", "-f", "-o", str(out), str(layer)], check=True, capture_output=True)
    return out.read_bytes()


def zstd_frame_counts(layer: Path) -> tuple[int, int]:
    """(zstd frames, skippable frames) as ``zstd -lv`` counts them."""
    text = subprocess.run([zstd(), "-lv", str(layer)], check=True, capture_output=True, text=True).stdout
    frames = int(re.search(r"# Zstandard Frames: (\d+)", text).group(1))
    skips = re.search(r"# Skippable Frames: (\d+)", text)
    return frames, int(skips.group(1)) if skips else 0


def pack(src: Path, out: Path, *opts: str) -> dict:
    proc = run_cli("pack", "--format", "erofs", src, "-o", out, "--json", *opts)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def read_table(layer: bytes, at: int) -> dict:
    """The chunk table at ``at``, read by hand as the pull request lays it out."""
    magic, n = struct.unpack_from("<II", layer, at)
    assert magic == SKIPPABLE
    payload = layer[at + 8 : at + 8 + n]
    tmagic, version, usize, chunk, algo, reserved = struct.unpack_from("<IIQIBH", payload)
    assert (tmagic, version, reserved) == (TABLE_MAGIC, 1, 0)
    hsize = {0: 0, 1: 64}[algo]
    count = -(-usize // chunk)
    assert n == 23 + count * (8 + hsize)
    entries = []
    for i in range(count):
        pos = 23 + i * (8 + hsize)
        entries.append((struct.unpack_from("<Q", payload, pos)[0], payload[pos + 8 : pos + 8 + hsize]))
    return {"payload": payload, "usize": usize, "chunk": chunk, "entries": entries, "end": at + 8 + n}


def check_frames(data: bytes, image: bytes, res: dict) -> dict:
    """Each chunk-table entry is where a frame of the right piece of ``image`` starts, with its SHA-512; the
    table comes right after the last frame, and the dm-verity frame (if any) runs to the end of the file."""
    at = res["chunk_table_offset"]
    table = read_table(data, at)
    chunk = res["chunk_size"]
    assert table["usize"] == len(image) and table["chunk"] == chunk
    entries = table["entries"]
    assert len(entries) == -(-len(image) // chunk) == res["frames"]
    assert entries[0][0] == 0
    dctx = zstandard.ZstdDecompressor()
    for i, (off, digest) in enumerate(entries):
        end = entries[i + 1][0] if i + 1 < len(entries) else at
        frame = data[off:end]
        assert dctx.decompress(frame) == image[i * chunk : (i + 1) * chunk], f"frame {i}"
        assert digest == (hashlib.sha512(frame).digest() if res["hash"] == "sha512" else b"")
    assert hashlib.sha512(table["payload"]).hexdigest() == res["annotations"][A_TABLE_DIGEST].split(":")[1]
    assert res["annotations"][A_TABLE_OFFSET] == str(at)
    if "dm_verity" in res:
        v = int(res["annotations"][A_VERITY_OFFSET])
        assert v == table["end"] == res["dm_verity"]["frame_offset"]
        magic, n = struct.unpack_from("<II", data, v)
        assert magic == SKIPPABLE and v + 8 + n == len(data) and data[v + 8 : v + 14] == b"verity"
    else:
        assert table["end"] == len(data)
    return table


def assert_veritysetup_accepts(data: bytes, image: Path, res: dict, work: Path, salt: str = "-") -> None:
    """``veritysetup verify`` takes the payload (superblock, tree) as the hash device of the image, with the
    root hash reported; ``veritysetup format`` with the superblock's parameters writes the same tree."""
    v = res["dm_verity"]
    root = res["annotations"][A_VERITY_ROOT]
    assert root == f"sha512:{v['root_hash']}"
    off = v["frame_offset"]
    hash_file = work / "payload.hash"
    hash_file.write_bytes(data[off + 8 :])
    tool = veritysetup()
    subprocess.run(
        [tool, "verify", str(image), str(hash_file), v["root_hash"]], check=True, capture_output=True
    )
    bad = subprocess.run([tool, "verify", str(image), str(hash_file), "0" * 128], capture_output=True)
    assert bad.returncode != 0
    padded = work / "padded.img"  # veritysetup format wants whole blocks of data
    padded.write_bytes(image.read_bytes().ljust(-(-image.stat().st_size // 4096) * 4096, b"\0"))
    theirs = work / "theirs.hash"
    want = veritysetup_format(padded, theirs, "--hash=sha512", f"--salt={salt}", "--data-block-size=4096")
    assert want == v["root_hash"]
    assert hash_file.read_bytes()[4096:] == theirs.read_bytes()[4096:]  # the UUIDs differ


@pytest.fixture(scope="module")
def mkfs_trees(erofs_utils, fixture_tars, tmp_path_factory) -> dict[str, dict]:
    """What fsck.erofs extracts from mkfs.erofs's image of each tar (containerd's options)."""
    out = {}
    for name in TARS:
        work = tmp_path_factory.mktemp("mkfs")
        src = fixture_tars[name]
        if src.suffix == ".zst":  # mkfs.erofs reads plain tars only
            tar = work / src.stem
            tar.write_bytes(
                zstandard.ZstdDecompressor().decompress(src.read_bytes(), max_output_size=1 << 30)
            )
            src = tar
        theirs = erofs_utils.mkfs(work / "mkfs.erofs", plain_tar(src, work), *CONTAINERD)
        out[name] = extracted_tree(erofs_utils.extract(theirs, work / "x"))
    return out


@pytest.mark.parametrize("name", TARS)
def test_zstd_gives_the_plain_image(erofs_utils, fixture_tars, mkfs_trees, tmp_path, name):
    """For chunk sizes that divide the image, that do not, the image's own size and one larger than it (the
    default 4M), with and without frame checksums and dm-verity: zstd decompresses the layer to the plain
    image byte for byte, counts one frame per chunk, and fsck.erofs extracts the tree mkfs.erofs's gives."""
    src = fixture_tars[name]
    plain = tmp_path / "plain.erofs"
    pres = pack(src, plain)
    image = plain.read_bytes()
    assert len(image) % 4096 == 0 and len(image) >= 2 * 4096
    blocks = len(image) // 4096
    odd = next(k for k in (2, 3, 5, 7, 11, 13) if blocks % k) * 4096  # a chunk that does not divide it
    cases = [
        ("4096", ("--chunk-size", "4K")),
        (str(odd), ("--chunk-size", str(odd), "--seekable-hash", "none")),
        (str(len(image)), ("--chunk-size", str(len(image)), "--dm-verity")),
        (str(4 * MIB), ("--dm-verity",)),
    ]
    for i, (chunk, opts) in enumerate(cases):
        layer = tmp_path / f"l{i}.seekable"
        res = pack(src, layer, "--seekable", *opts)
        assert res["media_type"] == MEDIA_TYPE and res["chunk_size"] == int(chunk)
        assert res["uncompressed_size"] == len(image) == pres["size"]
        data = layer.read_bytes()
        assert res["size"] == len(data) and res["digest"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert res["uncompressed_digest"] == pres["digest"]
        out = tmp_path / f"l{i}.img"
        assert zstd_decompress(layer, out) == image, f"chunk size {chunk}: zstd -d is not the plain image"
        frames = -(-len(image) // int(chunk))
        assert zstd_frame_counts(layer) == (frames, 2 if "--dm-verity" in opts else 1)
        check_frames(data, image, res)
        if "--dm-verity" in opts:
            assert_veritysetup_accepts(data, out, res, tmp_path)
    got = check_image(erofs_utils, out, tmp_path / "check")
    assert_same_tree(got, mkfs_trees[name], name)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=trees(), blocks=st.integers(1, 9), hashed=st.booleans(), verity=st.booleans())
def test_generated_trees(tmp_path_factory, entries, blocks, hashed, verity):
    """Generated trees in chunks of 1 to 9 blocks: zstd decompresses each layer to the plain image, one
    frame per chunk, and the frames are where the chunk table says."""
    work = tmp_path_factory.mktemp("gen")
    write_tree_tar(work / "tree.tar", entries)
    plain = work / "plain.erofs"
    pack(work / "tree.tar", plain)
    opts = ["--chunk-size", str(blocks * 4096)]
    opts += [] if hashed else ["--seekable-hash", "none"]
    opts += ["--dm-verity"] if verity else []
    res = pack(work / "tree.tar", work / "l.seekable", "--seekable", *opts)
    image = plain.read_bytes()
    assert zstd_decompress(work / "l.seekable", work / "l.img") == image
    assert zstd_frame_counts(work / "l.seekable") == (-(-len(image) // (blocks * 4096)), 2 if verity else 1)
    check_frames((work / "l.seekable").read_bytes(), image, res)
    shutil.rmtree(work)


def test_an_image_of_two_blocks(tmp_path):
    """The smallest image (an empty tar's: two blocks) in one frame, with a two-leaf hash tree."""
    src = tmp_path / "empty.tar"
    src.write_bytes(bytes(1024))
    plain = tmp_path / "plain.erofs"
    pack(src, plain)
    layer = tmp_path / "e.seekable"
    res = pack(src, layer, "--seekable", "--dm-verity")
    img = tmp_path / "e.img"
    assert zstd_decompress(layer, img) == plain.read_bytes() and len(plain.read_bytes()) == 8192
    assert zstd_frame_counts(layer) == (1, 2)
    check_frames(layer.read_bytes(), plain.read_bytes(), res)
    assert_veritysetup_accepts(layer.read_bytes(), img, res, tmp_path)
    proc = run_cli("verify", layer, "--root-hash", res["annotations"][A_VERITY_ROOT])
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_a_salt_goes_in_the_superblock(fixture_tars, tmp_path):
    """--salt (no salt is the converter's default): veritysetup reads it from the superblock."""
    layer = tmp_path / "s.seekable"
    res = pack(fixture_tars["xattrs.tar"], layer, "--seekable", "--dm-verity", "--salt", "0a1b2c")
    img = tmp_path / "s.img"
    zstd_decompress(layer, img)
    assert_veritysetup_accepts(layer.read_bytes(), img, res, tmp_path, salt="0a1b2c")
    assert run_cli("verify", layer, "--root-hash", res["annotations"][A_VERITY_ROOT]).returncode == 0


@pytest.fixture(scope="module")
def verity_layer(fixture_tars, tmp_path_factory) -> tuple[Path, dict, Path]:
    work = tmp_path_factory.mktemp("vl")
    layer = work / "v.seekable"
    res = pack(fixture_tars["every-type.tar"], layer, "--seekable", "--chunk-size", "64K", "--dm-verity")
    plain = work / "plain.erofs"
    pack(fixture_tars["every-type.tar"], plain)
    return layer, res, plain


def test_our_reader_reads_what_we_write(verity_layer, erofs_utils, fixture_tars, tmp_path):
    """info, ls, cat and unpack of the layer are those of the plain image inside it; verify passes with the
    root digest as the annotation holds it."""
    layer, res, plain = verity_layer
    info = json.loads(run_cli("info", "--json", layer).stdout)
    t = info["seekable"]
    assert (t["chunk_table_offset"], t["chunk_size"], t["frames"], t["hash"]) == (
        res["chunk_table_offset"],
        65536,
        res["frames"],
        "sha512",
    )
    assert t["dm_verity_offset"] == res["dm_verity"]["frame_offset"]
    assert run_cli("ls", "-R", layer).stdout == run_cli("ls", "-R", plain).stdout
    assert_same_tree(our_tree(layer), our_tree(plain), "seekable against plain")
    names = [ln for ln in run_cli("ls", "-R", layer).stdout.splitlines() if ln.startswith(b"/data/")]
    cats = 0
    for path in names:
        got = run_cli("cat", layer, os.fsdecode(path))
        if got.returncode == 0 and got.stdout:
            assert got.stdout == run_cli("cat", plain, os.fsdecode(path)).stdout
            cats += 1
        if cats == 5:
            break
    assert cats == 5
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert run_cli("unpack", layer, "--to-dir", out).returncode == 0
    # assert_same_tree: fsck.erofs 1.9.3 drops xattrs with empty values (trusted.overlay.origin), unpack not.
    assert_same_tree(
        extracted_tree(out), extracted_tree(erofs_utils.extract(plain, ref)), "unpack against fsck"
    )
    proc = run_cli("verify", layer, "--root-hash", res["annotations"][A_VERITY_ROOT])
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert f"{res['frames']} zstd frames".encode() in proc.stdout and b"dm-verity blocks" in proc.stdout


def test_the_mount_serves_what_erofsfuse_serves(verity_layer, erofs_utils, mounts, tmp_path):
    layer, _, plain = verity_layer
    mp = mounts.mount(layer)
    with erofs_utils.mounted(plain, tmp_path / "real") as real:
        assert_same_tree(
            extracted_tree(mp / "rootfs"), extracted_tree(real), "seekable mount against erofsfuse"
        )


def _verify_json(layer: Path, *opts: str) -> tuple[int, list[dict]]:
    proc = run_cli("verify", layer, "--json", *opts)
    return proc.returncode, json.loads(proc.stdout)["layers"][0].get("findings", [])


def _flipped(data: bytes, byte: int, out: Path) -> Path:
    b = bytearray(data)
    b[byte] ^= 0x04
    out.write_bytes(bytes(b))
    return out


@pytest.mark.parametrize("hashed", [True, False], ids=["sha512", "nohash"])
def test_verify_names_a_flipped_bit(fixture_tars, tmp_path, hashed):
    """A bit flipped in a frame (caught by its SHA-512, or without one by zstd's content checksum), in a
    frame's SHA-512 in the chunk table, in a frame offset of the table, and in the hash tree."""
    layer = tmp_path / "l.seekable"
    opts = ("--chunk-size", "16K", "--dm-verity") + (() if hashed else ("--seekable-hash", "none"))
    res = pack(fixture_tars["every-type.tar"], layer, "--seekable", *opts)
    data = layer.read_bytes()
    root = res["annotations"][A_VERITY_ROOT]
    code, findings = _verify_json(layer, "--root-hash", root)
    assert code == 0 and not findings
    table = read_table(data, res["chunk_table_offset"])
    k = len(table["entries"]) // 2
    start, end = table["entries"][k][0], table["entries"][k + 1][0]
    bad = _flipped(data, (start + end) // 2, tmp_path / "frame.seekable")
    code, findings = _verify_json(bad, "--root-hash", root)
    mine = [f for f in findings if f["check"] == "seekable.frame"]
    assert code == 1 and len(mine) == 1 and re.match(rf"frame {k}\b", mine[0]["message"]), findings
    assert ("SHA-512" if hashed else "decompress") in mine[0]["message"]
    entry_at = res["chunk_table_offset"] + 8 + 23 + k * (8 + (64 if hashed else 0))
    if hashed:
        bad = _flipped(data, entry_at + 8 + 10, tmp_path / "sum.seekable")
        code, findings = _verify_json(bad, "--root-hash", root)
        mine = [f for f in findings if f["check"] == "seekable.frame"]
        assert code == 1 and len(mine) == 1 and f"frame {k}: SHA-512" in mine[0]["message"], findings
    # A wrong frame offset: the table is found from the end without walking the frames, so verify, which
    # walks them, names it (and the two frames it cuts wrongly).
    bad = _flipped(data, entry_at + 1, tmp_path / "offset.seekable")
    code, findings = _verify_json(bad, "--root-hash", root)
    mine = [f["message"] for f in findings if f["check"] == "seekable.frame"]
    assert code == 1 and any(f"chunk {k}'s frame offset" in m for m in mine), findings
    tree_at = res["dm_verity"]["frame_offset"] + 8 + 4096
    bad = _flipped(data, tree_at + 100, tmp_path / "tree.seekable")
    code, findings = _verify_json(bad, "--root-hash", root)
    assert code == 1 and [f["check"] for f in findings] == ["verity.hash"], findings
    assert findings[0]["offset"] == tree_at


def test_convert_to_seekable_erofs(fixture_tars, tmp_path):
    """convert --to erofs --seekable: each tar layer a seekable layer of the media type and annotations the
    pull request's converter writes, the image inside being the one convert --to erofs writes, and the
    diff IDs the digests of what zstd decompresses; plain EROFS layers of a layout are framed as they are."""
    from test_convert import LayoutWriter, blob, read_json

    tars = [fixture_tars["every-type.tar"].read_bytes(), fixture_tars["whiteouts.tar"].read_bytes()]
    src = tmp_path / "src"
    w = LayoutWriter(src)
    w.index([w.image(tars, ["gzip", "none"])])
    plain_out, out = tmp_path / "plain", tmp_path / "out"
    assert run_cli("convert", src, plain_out, "--to", "erofs").returncode == 0
    proc = run_cli("convert", src, out, "--to", "erofs", "--seekable", "--dm-verity", "--chunk-size", "256K")
    assert proc.returncode == 0, proc.stderr.decode()

    def layers(root: Path) -> tuple[dict, list[dict], dict]:
        (mdesc,) = json.loads((root / "index.json").read_text())["manifests"]
        manifest = read_json(root, mdesc)
        return mdesc, manifest["layers"], read_json(root, manifest["config"])

    _, plain_layers, _ = layers(plain_out)
    mdesc, seek_layers, config = layers(out)
    assert "erofs" in mdesc["platform"]["os.features"] and "erofs" in config["os.features"]
    diff_ids = []
    for i, (layer, plain) in enumerate(zip(seek_layers, plain_layers)):
        assert layer["mediaType"] == MEDIA_TYPE
        assert set(layer["annotations"]) == {A_TABLE_OFFSET, A_TABLE_DIGEST, A_VERITY_OFFSET, A_VERITY_ROOT}
        data = blob(out, layer)
        path = tmp_path / f"layer{i}.seekable"
        path.write_bytes(data)
        image = zstd_decompress(path, tmp_path / f"layer{i}.img")
        assert image == blob(plain_out, plain)
        diff_ids.append(f"sha256:{hashlib.sha256(image).hexdigest()}")
        ann = layer["annotations"]
        res = {
            "chunk_table_offset": int(ann[A_TABLE_OFFSET]),
            "chunk_size": 256 << 10,
            "frames": -(-len(image) // (256 << 10)),
            "hash": "sha512",
            "annotations": ann,
            "dm_verity": {"frame_offset": int(ann[A_VERITY_OFFSET]), "root_hash": ann[A_VERITY_ROOT][7:]},
        }
        check_frames(data, image, res)
        assert_veritysetup_accepts(data, tmp_path / f"layer{i}.img", res, tmp_path)
        assert run_cli("verify", path, "--root-hash", ann[A_VERITY_ROOT]).returncode == 0
    assert config["rootfs"]["diff_ids"] == diff_ids
    # A layout of plain EROFS layers: each blob framed as it is, its diff ID kept.
    again = tmp_path / "again"
    proc = run_cli("convert", plain_out, again, "--to", "erofs", "--seekable")
    assert proc.returncode == 0, proc.stderr.decode()
    _, framed, config2 = layers(again)
    for i, (layer, plain) in enumerate(zip(framed, plain_layers)):
        assert layer["mediaType"] == MEDIA_TYPE and A_VERITY_ROOT not in layer["annotations"]
        path = tmp_path / f"again{i}.seekable"
        path.write_bytes(blob(again, layer))
        assert zstd_decompress(path, tmp_path / f"again{i}.img") == blob(plain_out, plain)
    assert config2["rootfs"]["diff_ids"] == [p["digest"] for p in plain_layers]


def test_bad_options_are_one_line(fixture_tars, tmp_path):
    tar = fixture_tars["xattrs.tar"]
    out = tmp_path / "out.seekable"
    cases = [
        (("--format", "erofs", "--seekable", "--chunk-size", "5000"), "multiple of 4096"),
        (("--format", "erofs", "--seekable", "--chunk-size", "0"), "multiple of 4096"),
        (("--format", "erofs", "--seekable", "--chunk-size", "1T"), "over 64M"),
        (("--format", "erofs", "--seekable", "--chunk-size", "128M"), "over 64M"),
        (("--format", "erofs", "--seekable", "--chunk-size", "lots"), "--chunk-size"),
        (("--seekable",), "--seekable: only with --format erofs"),
        (("--format", "erofs", "--chunk-size", "4M"), "only with --seekable"),
        (("--format", "erofs", "--seekable-hash", "none"), "only with --seekable"),
        (("--format", "erofs", "--seekable", "--dm-verity", "--no-verity-superblock"), "superblock"),
    ]
    for opts, needle in cases:
        assert_one_line_error(run_cli("pack", tar, "-o", out, *opts), 2, needle)
        assert not out.exists() and not list(tmp_path.glob(".out.seekable*"))
    src = tmp_path / "src"
    from test_convert import simple_layout

    simple_layout(src, [tar.read_bytes()], ["none"])
    assert_one_line_error(run_cli("convert", src, tmp_path / "o1", "--seekable"), 2, "only with --to erofs")
    assert_one_line_error(
        run_cli("convert", src, tmp_path / "o2", "--to", "erofs", "--seekable", "--chunk-size", "12345"),
        2,
        "multiple of 4096",
    )
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_packing_stays_in_bounded_memory(tmp_path):
    """A 1 GiB file (a zstd tar of a few hundred KB) packed under RLIMIT_AS of 512 MiB, in 64 MiB chunks with
    dm-verity: the image is framed a chunk at a time, never held whole."""
    import hostile

    src = tmp_path / "bomb.tar.zst"
    next(hostile.dedup_bomb(1 << 30)).write(src)
    layer = tmp_path / "bomb.seekable"
    with open(tmp_path / "res.json", "wb") as out:
        proc = hostile.run_limited(
            "pack", "--format", "erofs", "--seekable", "--chunk-size", "64M", "--dm-verity", "--json", src,
            "-o", layer, stdout=out, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["uncompressed_size"] > 1 << 30 and res["frames"] == -(-res["uncompressed_size"] // (64 * MIB))
    assert zstd_frame_counts(layer) == (res["frames"], 2)
    digest = subprocess.run(
        f"{zstd()} -dc {layer} | sha256sum", shell=True, check=True, capture_output=True, text=True
    ).stdout.split()[0]
    assert f"sha256:{digest}" == res["uncompressed_digest"]


@pytest.mark.slow
def test_debian_rootfs(erofs_utils, tmp_path):
    """The Debian minbase tar of the benches, with dm-verity and the default 4M chunks."""
    src = debian_rootfs_tar()
    plain = tmp_path / "plain.erofs"
    pres = pack(src, plain)
    layer = tmp_path / "d.seekable"
    res = pack(src, layer, "--seekable", "--dm-verity")
    img = tmp_path / "d.img"
    data = layer.read_bytes()
    assert zstd_decompress(layer, img) == plain.read_bytes()
    assert res["uncompressed_digest"] == pres["digest"] and res["frames"] == -(-pres["size"] // (4 * MIB)) > 1
    assert zstd_frame_counts(layer) == (res["frames"], 2)
    check_frames(data, plain.read_bytes(), res)
    assert_veritysetup_accepts(data, img, res, tmp_path)
    erofs_utils.run("fsck.erofs", img)
    proc = run_cli("verify", layer, "--root-hash", res["annotations"][A_VERITY_ROOT], timeout=600)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
