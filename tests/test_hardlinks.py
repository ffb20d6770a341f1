"""Hard links are names of one nid, as in nydus (nydusd and nydus-image unpack take the nid for the inode):
inodes that only share an i_ino are different files for every reader, and verify reports such a group."""

from __future__ import annotations

import io
import json
import os
import tarfile

import hostile
import pytest
from fixtures_util import run_cli

from nydus_inspect.pack import PackOptions, pack

CASES = {c.name: c for c in hostile.crafted_links()}


def _tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_a_file_sharing_an_i_ino_with_a_symlink_is_extracted_as_a_file(tmp_path):
    boot = tmp_path / "layer.boot"
    CASES["symlink-and-file"].write(boot)
    out = tmp_path / "out"
    proc = run_cli("unpack", "-q", boot, "--to-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(out / "a") == "../../../../../../tmp/outside"
    assert not os.path.islink(out / "b") and os.path.isfile(out / "b")
    assert os.stat(out / "b").st_nlink == 1
    tar = run_cli("unpack", "-q", boot, "-o", "-")
    assert tar.returncode == 0, tar.stderr
    members = _tar_members(tar.stdout)
    assert members["a"].issym() and members["b"].isreg()


@pytest.mark.parametrize("name", sorted(CASES))
def test_verify_reports_inodes_that_share_an_i_ino_but_differ(tmp_path, name):
    boot = tmp_path / "layer.boot"
    CASES[name].write(boot)
    proc = run_cli("verify", "--json", boot)
    assert proc.returncode == 1, proc.stderr
    [layer] = json.loads(proc.stdout)["layers"]
    found = [f for f in layer["findings"] if f["check"] == "bootstrap.nlink"]
    assert len(found) == 1, found
    assert "sharing i_ino" in found[0]["message"]
    assert found[0]["field"] == "i_ino" and found[0]["path"] == "/b"


def test_cat_and_unpack_agree_on_two_files_sharing_an_i_ino(tmp_path):
    """Real bytes: two packed files of different content, their inodes then made to share an i_ino."""
    src = tmp_path / "src.tar"
    src.write_bytes(
        hostile.member(b"a", hostile.text("first", 9000))
        + hostile.member(b"b", hostile.text("second", 7000))
        + hostile.END
    )
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    pack(str(src), str(blob), PackOptions(workers=1, bootstrap=str(boot)))
    boot.write_bytes(hostile.share_ino(boot.read_bytes(), [b"/a", b"/b"]))
    cat = run_cli("cat", boot, "/b", "--blob", blob)
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == hostile.text("second", 7000)
    tar = run_cli("unpack", "-q", boot, "--blob", blob, "-o", "-")
    assert tar.returncode == 0, tar.stderr
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
        assert tf.getmember("b").isreg()
        assert tf.extractfile("b").read() == cat.stdout
        assert tf.extractfile("a").read() == hostile.text("first", 9000)
    assert run_cli("verify", boot, "--blob", blob).returncode == 1


def test_real_hard_links_of_nydus_image_stay_one_group(tmp_path, oracle):
    """nydus-image create writes the names of a hard-linked file as dirents of one nid: one group in ls, link
    entries in unpack, a clean verify."""
    from oracle import TAR_RAFS

    src = tmp_path / "src.tar"
    src.write_bytes(
        hostile.member(b"f", hostile.text("linked", 5000))
        + hostile.member(b"g", typeflag=b"1", linkname=b"f")
        + hostile.member(b"h", typeflag=b"1", linkname=b"f")
        + hostile.member(b"other", hostile.text("other", 3000))
        + hostile.END
    )
    boot, blob = oracle.create(src, tmp_path / "out", *TAR_RAFS)
    listing = run_cli("ls", "--json", "-R", boot, "--blob", blob)
    assert listing.returncode == 0, listing.stderr
    nodes = {n["path"]: n for n in json.loads(listing.stdout)}
    assert nodes["/f"]["nid"] == nodes["/g"]["nid"] == nodes["/h"]["nid"] != nodes["/other"]["nid"]
    assert {nodes[p].get("hardlink") for p in ("/f", "/g", "/h")} == {nodes["/f"]["nid"]}
    assert "hardlink" not in nodes["/other"]
    tar = run_cli("unpack", "-q", boot, "--blob", blob, "-o", "-")
    members = _tar_members(tar.stdout)
    assert members["f"].isreg() and members["g"].islnk() and members["h"].islnk()
    assert members["g"].linkname == members["h"].linkname == "f"
    assert run_cli("verify", "-q", boot, "--blob", blob).returncode == 0
