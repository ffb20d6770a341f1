"""EROFS layers written natively (``pack --format erofs``), judged by erofs-utils 1.9.3 and veritysetup.

Each image must pass ``fsck.erofs``, and what ``fsck.erofs --extract`` makes of it must be what it makes of
the image the real ``mkfs.erofs`` writes from the same tar with containerd's options (``--tar=f --aufs
-Enoinline_data``); our reader must read it as fsck.erofs extracts it (test_erofs_native's check_image).
The dm-verity payload's root hash must be ``veritysetup format``'s for the same data, and ``veritysetup
verify`` must accept the payload; ``verify --root-hash`` must locate a flipped bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import VECTORS
from fixtures_util import VECTOR_TARS, assert_one_line_error, debian_rootfs_tar, fixture_tars_fixture, run_cli  # noqa: F401
from hypothesis import HealthCheck, assume, given, settings
from test_erofs_native import EROFS_AS_ROOT, check_image, extracted_tree
from tree_strategies import trees, write_tree_tar

from nydus_inspect.formats import verity

pytestmark = EROFS_AS_ROOT

FIXTURES = [
    "every-type.tar",
    "every-type.tar.gz",
    "whiteouts.tar",
    "xattrs.tar",
    pytest.param(
        "longnames.tar",
        marks=pytest.mark.xfail(
            strict=True,
            reason="directories the tar only implies: mkfs.erofs gives them their parent's mode, "
            "the shared tar reader 0755 (as nydus-image does)",
        ),
    ),
    "dedup.tar",
    "global-pax.tar",
]
CONTAINERD = ("--tar=f", "--aufs", "-Enoinline_data")
VECTOR_TAR_DIR = VECTORS / "nydus" / "tar"
ZERO_SALT = "00" * 32


def veritysetup() -> str:
    path = shutil.which("veritysetup")
    if path is None:
        reason = "veritysetup is not installed (apt-get install cryptsetup-bin; `make deps` does)"
        if os.environ.get("NYDUS_REQUIRE_ORACLE") == "1":
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return path


def pack(src: Path, out: Path, *opts: str) -> dict:
    proc = run_cli("pack", "--format", "erofs", src, "-o", out, "--json", *opts)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def plain_tar(src: Path, work: Path) -> Path:
    """mkfs.erofs reads plain tars only (ours takes gzip and zstd too)."""
    if src.suffix != ".gz":
        return src
    import gzip

    out = work / src.stem
    out.write_bytes(gzip.decompress(src.read_bytes()))
    return out


def compare_with_mkfs(erofs_utils, src: Path, work: Path, inline: bool = False) -> dict:
    """Ours and mkfs.erofs's image of ``src`` extract to the same tree, and ours reads as it extracts."""
    work.mkdir(parents=True, exist_ok=True)
    ours = work / "ours.erofs"
    res = pack(src, ours, *(("--inline-data",) if inline else ()))
    assert res["size"] == ours.stat().st_size
    opts = CONTAINERD if not inline else CONTAINERD[:2]
    theirs = erofs_utils.mkfs(work / "mkfs.erofs", plain_tar(src, work), *opts)
    want = extracted_tree(erofs_utils.extract(theirs, work / "mkfs-x"))
    got = check_image(erofs_utils, ours, work / "check")
    assert got == want
    return res


@pytest.mark.parametrize("inline", [False, True], ids=["noinline", "inline"])
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_tars(erofs_utils, fixture_tars, tmp_path, name, inline):
    compare_with_mkfs(erofs_utils, fixture_tars[name], tmp_path, inline)


@pytest.mark.parametrize("name", VECTOR_TARS)
def test_vector_tars(erofs_utils, tmp_path, name):
    src = VECTOR_TAR_DIR / name
    if not src.is_file():
        if os.environ.get("NYDUS_REQUIRE_VECTORS") == "1":
            pytest.fail(f"{src} missing (required in CI)")
        pytest.skip(f"{src} missing")
    compare_with_mkfs(erofs_utils, src, tmp_path)


def test_whiteouts_become_overlayfs_ones(erofs_utils, fixture_tars, tmp_path):
    """--aufs: a .wh. entry is a 0/0 character device, .wh..wh..opq the opaque xattr of its directory."""
    compare_with_mkfs(erofs_utils, fixture_tars["whiteouts.tar"], tmp_path)
    tree = extracted_tree(tmp_path / "check" / "fsck")
    devs = [p for p, e in tree.items() if e["type"] == "char" and e["rdev"] == 0]
    assert devs and not [p for p in tree if b"/.wh." in p]
    assert any(e["xattrs"].get(b"trusted.overlay.opaque") == b"y" for e in tree.values())


def test_same_bytes_whatever_the_compression(fixture_tars, tmp_path):
    a = pack(fixture_tars["every-type.tar"], tmp_path / "a.erofs")
    b = pack(fixture_tars["every-type.tar.zst"], tmp_path / "b.erofs")
    assert a["digest"] == b["digest"]
    assert (tmp_path / "a.erofs").read_bytes() == (tmp_path / "b.erofs").read_bytes()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=trees())
def test_generated_trees(erofs_utils, tmp_path_factory, entries):
    # mkfs.erofs --aufs writes an image its own fsck.erofs cannot extract for a name that is just ".wh."
    # (an empty whiteout name): whiteouts are the fixture tars' business here.
    assume(not any(part.startswith(b".wh.") for e in entries for part in e[0].split(b"/")))
    work = tmp_path_factory.mktemp("tree")
    write_tree_tar(work / "tree.tar", entries)
    compare_with_mkfs(erofs_utils, work / "tree.tar", work)
    shutil.rmtree(work)


@pytest.mark.slow
def test_debian_rootfs(erofs_utils, tmp_path):
    """The Debian minbase tar of the benches, with dm-verity, when it has been built."""
    src = debian_rootfs_tar()
    compare_with_mkfs(erofs_utils, src, tmp_path)
    res = pack(src, tmp_path / "v.erofs", "--dm-verity")
    assert_veritysetup_agrees(tmp_path / "v.erofs", res, tmp_path)


def veritysetup_format(data: Path, hash_file: Path, *opts: str) -> str:
    hash_file.unlink(missing_ok=True)  # veritysetup writes into an existing file without truncating it
    proc = subprocess.run(
        [veritysetup(), "format", *opts, str(data), str(hash_file)], capture_output=True, check=True
    )
    return re.search(rb"Root hash:\s+([0-9a-f]{64,128})", proc.stdout).group(1).decode()


def assert_veritysetup_agrees(image: Path, res: dict, work: Path, salt: str = ZERO_SALT) -> None:
    v = res["dm_verity"]
    off = v["hash_offset"]
    assert off == res["erofs_size"] and off % 4096 == 0
    data = work / "data.img"
    with open(image, "rb") as f, open(data, "wb") as out:
        out.write(f.read(off))
    root = veritysetup_format(data, work / "data.hash", f"--salt={salt or '-'}")
    assert v["root_hash"] == root
    tool = veritysetup()
    if v["superblock"]:
        args = [tool, "verify", f"--hash-offset={off}", str(image), str(image), root]
        # Same tree, byte for byte, as veritysetup's (the UUID in its superblock differs).
        ours = image.read_bytes()[off + 4096 :]
        assert ours == (work / "data.hash").read_bytes()[4096:]
    else:
        args = [tool, "verify", "--no-superblock", f"--hash-offset={off}", f"--data-blocks={off // 4096}"]
        args += [f"--salt={salt or '-'}", str(image), str(image), root]
    subprocess.run(args, check=True, capture_output=True)
    bad = subprocess.run(args[:-1] + ["0" * 64], capture_output=True)
    assert bad.returncode != 0


@pytest.mark.parametrize(
    "opts,salt",
    [
        ((), ZERO_SALT),
        (("--no-verity-superblock",), ZERO_SALT),
        (("--salt", "-"), ""),
        (("--salt", "5a" * 32, "--no-verity-superblock"), "5a" * 32),
        (("--salt", "0123456789"), "0123456789"),
    ],
)
@pytest.mark.parametrize("name", ["every-type.tar", "whiteouts.tar"])
def test_dm_verity_matches_veritysetup(erofs_utils, fixture_tars, tmp_path, name, opts, salt):
    image = tmp_path / "v.erofs"
    res = pack(fixture_tars[name], image, "--dm-verity", *opts)
    assert_veritysetup_agrees(image, res, tmp_path, salt)
    # The payload changes nothing for EROFS readers: fsck.erofs and ours still read the image.
    erofs_utils.run("fsck.erofs", image)
    salt_arg = ("--salt", salt or "-") if "--no-verity-superblock" in opts else ()
    proc = run_cli("verify", image, "--root-hash", res["dm_verity"]["root_hash"], *salt_arg)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert b"dm-verity blocks" in proc.stdout


def test_root_hash_of_one_block_is_its_digest(tmp_path):
    """One data block: no hash blocks, the root hash is that block's digest (as veritysetup says)."""
    data = tmp_path / "one.img"
    data.write_bytes(os.urandom(4096))
    params = verity.Params(data_blocks=1)
    root, tree = verity.build_tree(params, verity.data_digests(params, data.read_bytes()))
    assert tree == b""
    assert root.hex() == veritysetup_format(data, tmp_path / "one.hash", f"--salt={ZERO_SALT}")


def test_tree_is_veritysetups_byte_for_byte(tmp_path):
    """Level sizes across a level boundary (128 digests per 4 KiB hash block)."""
    for blocks in (2, 128, 129, 16385):
        data = tmp_path / "d.img"
        with open(data, "wb") as f:
            f.truncate(blocks * 4096)
            f.seek((blocks - 1) * 4096)
            f.write(os.urandom(4096))
        params = verity.Params(data_blocks=blocks, salt=b"\x01\x02")
        root, tree = verity.build_tree(params, verity.data_digests(params, data.read_bytes()))
        want = veritysetup_format(data, tmp_path / f"{blocks}.hash", "--no-superblock", "--salt=0102")
        assert root.hex() == want
        assert tree == (tmp_path / f"{blocks}.hash").read_bytes()
        assert verity.check_tree(params, verity.data_digests(params, data.read_bytes()), tree, root) == []


@pytest.fixture
def verity_image(fixture_tars, tmp_path) -> tuple[Path, dict]:
    image = tmp_path / "v.erofs"
    return image, pack(fixture_tars["every-type.tar"], image, "--dm-verity")


def _flip(image: Path, out: Path, byte: int) -> Path:
    data = bytearray(image.read_bytes())
    data[byte] ^= 0x10
    out.write_bytes(bytes(data))
    return out


def test_flipped_bits_are_located(verity_image, tmp_path):
    image, res = verity_image
    root = res["dm_verity"]["root_hash"]
    off = res["dm_verity"]["hash_offset"]
    params = verity.Params(data_blocks=off // 4096)
    levels = params.levels()
    tree_off = off + 4096
    # A data block in the middle of a file's data (far from the metadata): only dm-verity sees it.
    block = off // 4096 - 3
    cases = {
        block * 4096 + 100: ("verity.data", f"data block {block} ", block * 4096),
    }
    for level, (start, _count) in enumerate(levels):
        cases[tree_off + start * 4096 + 5] = ("verity.hash", f"hash block {start} (level {level})", None)
    for byte, (check, needle, at) in cases.items():
        bad = _flip(image, tmp_path / "bad.erofs", byte)
        proc = run_cli("verify", bad, "--root-hash", root, "--json")
        assert proc.returncode == 1, proc.stderr.decode()
        findings = json.loads(proc.stdout)["layers"][0]["findings"]
        mine = [f for f in findings if f["check"].startswith("verity.")]
        assert len(mine) == 1 and mine[0]["check"] == check and needle in mine[0]["message"], findings
        if at is not None:
            assert mine[0]["offset"] == at


def test_wrong_root_hash_is_one_line(verity_image):
    image, res = verity_image
    other = "1" * 64
    err = assert_one_line_error(run_cli("verify", image, "--root-hash", other), 2, "root hash")
    assert other in err and res["dm_verity"]["root_hash"] in err
    assert_one_line_error(run_cli("verify", image, "--root-hash", "sha256:abc"), 2, "--root-hash")


@pytest.mark.parametrize("cut", [4096, 1])
def test_hash_tree_of_the_wrong_size_is_one_line(verity_image, tmp_path, cut):
    image, res = verity_image
    bad = tmp_path / "short.erofs"
    bad.write_bytes(image.read_bytes()[:-cut])
    assert_one_line_error(run_cli("verify", bad), 2, "hash tree", "expected")
    longer = tmp_path / "long.erofs"
    longer.write_bytes(image.read_bytes() + bytes(cut))
    assert_one_line_error(
        run_cli("verify", longer, "--root-hash", res["dm_verity"]["root_hash"]), 2, "hash tree"
    )


def test_root_hash_without_payload_is_one_line(fixture_tars, tmp_path):
    image = tmp_path / "plain.erofs"
    pack(fixture_tars["xattrs.tar"], image)
    assert_one_line_error(run_cli("verify", image, "--root-hash", "2" * 64), 2, "no dm-verity payload")


def test_bad_pack_input_is_one_line(fixture_tars, tmp_path):
    out = tmp_path / "out.erofs"
    assert_one_line_error(
        run_cli("pack", "--format", "erofs", fixture_tars["sparse.tar"], "-o", out), 2, "sparse"
    )
    assert not out.exists()
    assert_one_line_error(
        run_cli("pack", "--format", "erofs", fixture_tars["xattrs.tar"], "-o", out, "--salt", "xyz"),
        2,
        "salt",
    )
    assert_one_line_error(
        run_cli("pack", fixture_tars["xattrs.tar"], "-o", out, "--dm-verity"), 2, "--format erofs"
    )
    trunc = tmp_path / "trunc.tar"
    trunc.write_bytes(fixture_tars["every-type.tar"].read_bytes()[:30000])
    assert_one_line_error(run_cli("pack", "--format", "erofs", trunc, "-o", out), 2)
    assert not out.exists() and not list(tmp_path.glob(".out.erofs*"))


# ---------------------------------------------------------------------------- convert --to erofs
@pytest.mark.parametrize("opts", [(), ("--dm-verity",), ("--dm-verity", "--no-verity-superblock")])
def test_convert_to_erofs(erofs_utils, fixture_tars, tmp_path, opts):
    """Each tar layer becomes an EROFS layer as containerd's converter writes it: the media type, the
    filesystem UUID from the diff ID, diff IDs of the EROFS blobs, ``erofs`` in os.features, and the
    dm-verity root digest and offset in the layer annotations (which veritysetup and verify accept)."""
    import uuid

    from test_convert import LayoutWriter, blob, read_json

    tars = [fixture_tars["every-type.tar"].read_bytes(), fixture_tars["whiteouts.tar"].read_bytes()]
    src = tmp_path / "src"
    w = LayoutWriter(src)
    desc = w.image(tars, ["gzip", "none"])
    w.index([desc])
    out = tmp_path / "out"
    proc = run_cli("convert", src, out, "--to", "erofs", *opts)
    assert proc.returncode == 0, proc.stderr.decode()
    index = json.loads((out / "index.json").read_text())
    (mdesc,) = index["manifests"]
    assert "erofs" in mdesc["platform"]["os.features"]
    manifest = read_json(out, mdesc)
    config = read_json(out, manifest["config"])
    assert "erofs" in config["os.features"]
    assert config["rootfs"]["diff_ids"] == [d["digest"] for d in manifest["layers"]]
    for i, (layer, tar) in enumerate(zip(manifest["layers"], tars)):
        assert layer["mediaType"] == "application/vnd.erofs.layer.v1"
        data = blob(out, layer)
        image = tmp_path / f"layer{i}.erofs"
        image.write_bytes(data)
        diff_id = f"sha256:{hashlib.sha256(tar).hexdigest()}"
        assert data[1024 + 48 : 1024 + 64] == uuid.uuid5(uuid.NAMESPACE_URL, "erofs:blobs/" + diff_id).bytes
        tar_path = tmp_path / f"layer{i}.tar"
        tar_path.write_bytes(tar)
        theirs = erofs_utils.mkfs(tmp_path / f"mkfs{i}.erofs", tar_path, *CONTAINERD)
        want = extracted_tree(erofs_utils.extract(theirs, tmp_path / f"mkfs{i}-x"))
        assert check_image(erofs_utils, image, tmp_path / f"check{i}") == want
        ann = layer.get("annotations") or {}
        if not opts:
            assert not ann
            continue
        root = ann["dev.containerd.erofs.dmverity.root_digest"]
        off = int(ann["dev.containerd.erofs.dmverity.offset"])
        res = {
            "erofs_size": off,
            "dm_verity": {
                "root_hash": root.removeprefix("sha256:"),
                "hash_offset": off,
                "superblock": "--no-verity-superblock" not in opts,
            },
        }
        assert_veritysetup_agrees(image, res, tmp_path)
        proc = run_cli("verify", image, "--root-hash", root)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_bad_verity_superblock_is_one_line(verity_image, tmp_path):
    """A superblock whose block size is not a power of two, or that covers other data, is refused by name."""
    image, res = verity_image
    off = res["dm_verity"]["hash_offset"]
    data = bytearray(image.read_bytes())
    data[off + 64 : off + 68] = (4000).to_bytes(4, "little")  # data_block_size
    bad = tmp_path / "bad-sb.erofs"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run_cli("verify", bad), 2, "data_block_size")
    data = bytearray(image.read_bytes())
    data[off + 72 : off + 80] = (7).to_bytes(8, "little")  # data_blocks
    bad.write_bytes(bytes(data))
    assert_one_line_error(run_cli("verify", bad), 2, "covers 7 blocks")
