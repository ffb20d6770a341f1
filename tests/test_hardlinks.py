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


# ---------------------------------------------------------------------------- a hard link's own header
#: The target's header and each link's: other modes, owners and times (and, for one link, an xattr). A
#: runtime extracting the tar leaves the inode with the attributes of the last header naming it.
T0 = 1_700_000_000
TARGET = {"mode": 0o640, "uid": 5, "gid": 6, "mtime": T0}
LINK_SAME_DIR = {"mode": 0o604, "uid": 7, "gid": 8, "mtime": T0 + 100}
LINK_DEEPER = {"mode": 0o755, "uid": 9, "gid": 10, "mtime": T0 + 200}


def _header_tar(path, *, early_link: bool = False, link_xattr: bool = False) -> dict[str, dict]:
    """A layer tar with ``d/a`` and its links ``d/b`` and ``e/deep/c`` (each header its own attributes), and a
    file ``d/other``; ``early_link``: also ``d/0`` linked to ``d/z``, a name before its target's in sorted
    order; ``link_xattr``: ``d/b`` carries an xattr of its own. Returns what each inode's last header says."""

    def info(name, kind, attrs, **extra):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = (
            kind,
            attrs["mode"],
            attrs["uid"],
            attrs["gid"],
            attrs["mtime"],
        )
        ti.uname = ti.gname = ""
        for k, v in extra.items():
            setattr(ti, k, v)
        return ti

    dirs = {"mode": 0o755, "uid": 0, "gid": 0, "mtime": T0}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("d", "e", "e/deep"):
            tf.addfile(info(d, tarfile.DIRTYPE, dirs))
        data = hostile.text("linked", 6000)
        target = info("d/a", tarfile.REGTYPE, TARGET, size=len(data))
        target.pax_headers = {"SCHILY.xattr.user.of": "target"}
        tf.addfile(target, io.BytesIO(data))
        link = info("d/b", tarfile.LNKTYPE, LINK_SAME_DIR, linkname="d/a")
        if link_xattr:
            link.pax_headers = {"SCHILY.xattr.user.link": "b"}
        tf.addfile(link)
        other = hostile.text("other", 3000)
        tf.addfile(info("d/other", tarfile.REGTYPE, TARGET, size=len(other)), io.BytesIO(other))
        tf.addfile(info("e/deep/c", tarfile.LNKTYPE, LINK_DEEPER, linkname="d/a"))
        if early_link:
            z = hostile.text("z", 2000)
            tf.addfile(info("d/z", tarfile.REGTYPE, TARGET, size=len(z)), io.BytesIO(z))
            tf.addfile(info("d/0", tarfile.LNKTYPE, LINK_SAME_DIR, linkname="d/z"))
    linked = {**LINK_DEEPER, "xattrs": {"user.of": "target", **({"user.link": "b"} if link_xattr else {})}}
    want = {"/d/a": linked, "/d/b": linked, "/e/deep/c": linked, "/d/other": {**TARGET, "xattrs": {}}}
    if early_link:
        want["/d/z"] = want["/d/0"] = {**LINK_SAME_DIR, "xattrs": {}}
    return want


def _listed(boot, *opts) -> dict[str, dict]:
    proc = run_cli("ls", "-R", "--json", boot, *opts)
    assert proc.returncode == 0, proc.stderr
    return {
        e["path"]: {
            "mode": int(e["mode"], 8),
            "uid": e["uid"],
            "gid": e["gid"],
            "mtime": e["mtime"],
            "xattrs": e.get("xattrs", {}),
        }
        for e in json.loads(proc.stdout)
        if e["type"] == "file"
    }


def _diff(a, b, *opts) -> str:
    proc = run_cli("diff", a, b, *opts)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.decode()


def test_link_header_wins_as_nydus_image_writes_it(oracle, tmp_path):
    """pack (tar-rafs) and --type targz-ref give the inode the last header's mode, owner and mtime, as
    nydus-image does (field by field for targz-ref); diff finds no difference between the tar and either."""
    from test_targz_pack import compare_with_nydus_image, gzipped

    from oracle import TAR_RAFS

    src = tmp_path / "layer.tar"
    want = _header_tar(src)
    gz = gzipped(src, tmp_path / "layer.tar.gz")
    compare_with_nydus_image(oracle, gz, tmp_path / "ref")
    assert _listed(tmp_path / "ref" / "ours" / "blobs" / "layer.boot") == want

    ours = tmp_path / "ours.boot"
    assert run_cli("pack", src, "-o", ours).returncode == 0
    theirs, blob = oracle.create(src, tmp_path / "theirs", *TAR_RAFS)
    assert _listed(ours) == _listed(theirs, "--blob", blob) == want
    assert _diff(src, ours) == _diff(src, theirs, "--blob", blob) == "no differences\n"
    assert _diff(src, tmp_path / "ref" / "ours" / "blobs" / "layer.boot") == "no differences\n"


def test_unpack_and_mount_show_the_link_header(fuse_ok, tmp_path):
    """What unpack writes and what the mount serves: the last header's attributes, under every name."""
    src = tmp_path / "layer.tar"
    want = _header_tar(src)
    boot = tmp_path / "layer.boot"
    assert run_cli("pack", src, "-o", boot).returncode == 0

    def stat_of(root) -> dict[str, dict]:
        out = {}
        for p in want:
            st = os.lstat(f"{root}{p}")
            out[p] = {
                "mode": st.st_mode & 0o7777,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": int(st.st_mtime),
            }
        return out

    plain = {p: {k: v for k, v in w.items() if k != "xattrs"} for p, w in want.items()}
    out = tmp_path / "out"
    proc = run_cli("unpack", "-q", boot, "--to-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert stat_of(out) == plain
    assert os.stat(out / "d/a").st_ino == os.stat(out / "e/deep/c").st_ino
    tar = run_cli("unpack", "-q", boot, "-o", "-")
    assert tar.returncode == 0, tar.stderr
    # One member holds the data and the inode's attributes, the others link to it.
    [head] = [
        m
        for name, m in _tar_members(tar.stdout).items()
        if "/" + name in ("/d/a", "/d/b", "/e/deep/c") and m.isreg()
    ]
    assert (head.mode, head.uid, head.gid, head.mtime) == tuple(
        LINK_DEEPER[k] for k in ("mode", "uid", "gid", "mtime")
    )

    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = run_cli("mount", boot, mp, "--log-file", tmp_path / "mount.log")
    assert proc.returncode == 0, proc.stderr
    try:
        assert stat_of(mp / "rootfs") == plain
        assert os.getxattr(mp / "rootfs/e/deep/c", "user.of") == b"target"
    finally:
        assert run_cli("umount", mp, timeout=60).returncode == 0


def test_erofs_keeps_the_first_header_as_mkfs_erofs(erofs_utils, tmp_path):
    """mkfs.erofs --tar takes a hard link as a name only: the inode keeps its first header's attributes.
    pack --format erofs writes the same, and diff holds a plain EROFS layer to that rule (no difference for
    either image), while the tar read as a runtime extracts it differs from theirs."""
    from nydus_inspect.diff import compare, describe, describe_tar
    from nydus_inspect.tarstream import LINK_HEADER

    src = tmp_path / "layer.tar"
    want = _header_tar(src)
    theirs = erofs_utils.mkfs(tmp_path / "mkfs.erofs", src, "--tar=f", "--aufs", "-Enoinline_data")
    ours = tmp_path / "ours.erofs"
    assert run_cli("pack", "--format", "erofs", src, "-o", ours).returncode == 0
    first = {**TARGET, "xattrs": {"user.of": "target"}}
    expected = {**want, "/d/a": first, "/d/b": first, "/e/deep/c": first}
    assert _listed(theirs) == _listed(ours) == expected
    assert _diff(src, ours) == _diff(src, theirs) == "no differences\n"
    fields = {(d.path, d.field) for d in compare(describe_tar(str(src), LINK_HEADER), describe(str(theirs)))}
    assert fields == {
        (p, f) for p in (b"/d/a", b"/d/b", b"/e/deep/c") for f in ("mode", "uid", "gid", "mtime")
    }


def test_where_nydus_image_departs_from_the_last_header(oracle, tmp_path):
    """Two cases where nydus-image 2.4.4 does not give the inode its last header's attributes, and ours does
    (as containerd extracts the tar): a link whose name comes before its target's in nydus's write order
    (each name writes the shared inode, the last one written stays), and a link header's own xattrs (it
    copies the target's). diff of the tar and nydus's layer shows just those."""
    from oracle import TAR_RAFS

    src = tmp_path / "layer.tar"
    want = _header_tar(src, early_link=True, link_xattr=True)
    ours = tmp_path / "ours.boot"
    assert run_cli("pack", src, "-o", ours).returncode == 0
    assert _listed(ours) == want
    assert _diff(src, ours) == "no differences\n"
    theirs, blob = oracle.create(src, tmp_path / "theirs", *TAR_RAFS)
    listed = _listed(theirs, "--blob", blob)
    assert listed["/d/0"] == listed["/d/z"] == {**TARGET, "xattrs": {}}
    assert listed["/d/a"]["xattrs"] == {"user.of": "target"}
    shown = {
        tuple(part.strip() for part in line.split(":")[:2])
        for line in _diff(src, theirs, "--blob", blob).splitlines()[:-1]
    }
    assert shown == {
        *((p, f) for p in ("/d/0", "/d/z") for f in ("mode", "uid", "gid", "mtime")),
        *((p, "xattrs") for p in ("/d/a", "/d/b", "/e/deep/c")),
    }


def test_layer_tree_reads_a_tar_with_the_rule_of_the_layer_it_meets(erofs_utils, tmp_path):
    """The pytest plugin's ``layer_tree(a) == layer_tree(b)`` compares as ``diff`` does: the tar side is read
    with the hard-link rule of the layer on the other side (an EROFS image: the first header; a RAFS layer:
    the last), whichever side each stands on."""
    from nydus_inspect.testing import layer_tree

    src = tmp_path / "layer.tar"
    _header_tar(src)
    erofs = erofs_utils.mkfs(tmp_path / "mkfs.erofs", src, "--tar=f", "--aufs", "-Enoinline_data")
    rafs = tmp_path / "layer.blob"
    assert run_cli("pack", "-q", src, "-o", rafs).returncode == 0
    tar = layer_tree(src)
    assert tar == layer_tree(erofs) and layer_tree(erofs) == tar
    assert tar == layer_tree(rafs) and layer_tree(rafs) == tar
    # The two layers themselves differ where the rules do (and in the root, which the tar does not hold and
    # each writer makes its own).
    differ = {d.path for d in layer_tree(erofs).differences(layer_tree(rafs))} - {b"/"}
    assert differ == {b"/d/a", b"/d/b", b"/e/deep/c"}
