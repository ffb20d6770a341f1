"""A containerd EROFS image of several layers read as one tree, overlaid as containerd's snapshotter mounts it.

Three layer tars hold replacements (a file by a file, a directory by a file, a file by a directory, a file by
a symlink), deletions (OCI whiteouts of files, of a directory, of one name of a hard link), opaque
directories with new content above them, hard links in a lower and an upper layer, and a merged directory
whose attributes the upper layer changes. Each is made an EROFS layer two ways: by our ``convert --to erofs``
(plain and ``--seekable``) of the OCI image of the tars, and by the real ``mkfs.erofs --tar=f --aufs`` (as
containerd's differ runs it) per tar. The judge is the kernel: its overlayfs mounted read-only over the
layers (each mounted by the kernel's EROFS through a loop device, or by erofsfuse where the kernel has no
EROFS). ``ls -R --json`` with ``cat`` of every file, ``unpack --to-dir`` and our FUSE ``mount`` must all show
the kernel's tree; ``diff``, ``info`` and ``verify`` read the image too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
import test_mount
from fixtures_util import run_cli
from test_check import MTIME, tar
from test_convert import simple_layout
from test_erofs_native import _group, _linux_keeps, extracted_tree

from nydus_inspect.layer import open_layer
from nydus_inspect.overlay import DIRECTORY, OPAQUE_DIRECTORY, OTHER, WHITEOUT, stack_names

pytestmark = pytest.mark.erofs

fuse = test_mount.fuse
mounts = test_mount.mounts

BIG = hashlib.shake_256(b"overlay").digest(3 * (1 << 20) + 777)  # several of the reader's 1 MiB pieces

BOTTOM = [
    {"name": "etc", "type": "dir"},
    {"name": "etc/os-release", "data": b'NAME="bottom"\n'},
    {"name": "etc/hosts", "data": b"127.0.0.1 localhost\n", "xattrs": {"user.origin": "bottom"}},
    {"name": "etc/hosts.link", "type": "hardlink", "link": "etc/hosts"},
    {"name": "etc/motd", "data": b"old motd\n"},
    {"name": "bin", "type": "dir"},
    {"name": "bin/tool", "data": BIG, "mode": 0o755},
    {"name": "bin/sh", "type": "symlink", "link": "tool", "mode": 0o777},
    {"name": "var", "type": "dir"},
    {"name": "var/gone", "data": b"removed above\n"},
    {"name": "var/lib", "type": "dir"},
    {"name": "var/lib/a", "data": b"hidden by an opaque directory\n"},
    {"name": "var/lib/sub", "type": "dir"},
    {"name": "var/lib/sub/b", "data": b"also hidden\n"},
    {"name": "opt", "type": "dir"},
    {"name": "opt/x", "data": b"under a directory a file replaces\n"},
    {"name": "data", "type": "dir"},
    {"name": "data/keep", "data": b"whited out at the top\n"},
    {"name": "data/stays", "data": b"still here\n"},
    {"name": "usr", "type": "dir"},
    {"name": "usr/share", "type": "dir"},
    {"name": "usr/share/readme", "data": b"becomes a symlink\n"},
    {"name": "tmp", "type": "dir"},
    {"name": "tmp/becomes-dir", "data": b"a file a directory replaces\n"},
    {"name": "srv", "type": "dir"},
    {"name": "srv/old", "data": b"hidden by the opaque srv\n"},
    {"name": "gone-dir", "type": "dir"},
    {"name": "gone-dir/inside", "data": b"a directory whited out whole\n"},
    {"name": "dev", "type": "dir"},
    {"name": "dev/null", "type": "char", "rdev": (1, 3)},  # a character device, not a whiteout
    {"name": "dev/fifo", "type": "fifo"},
    {"name": "dev/zero", "type": "char", "rdev": (1, 5)},
]
MIDDLE = [
    {"name": "etc", "type": "dir", "mode": 0o750},  # the merged /etc takes these attributes
    {"name": "etc/motd", "data": b"new motd\n"},
    {"name": "etc/.wh.hosts.link"},
    {"name": "var", "type": "dir"},
    {"name": "var/.wh.gone"},
    {"name": "var/lib", "type": "dir", "mode": 0o700},
    {"name": "var/lib/.wh..wh..opq"},
    {"name": "var/lib/c", "data": b"in the opaque directory\n"},
    {"name": "opt", "data": b"a file where a directory was\n"},
    {"name": "tmp", "type": "dir"},
    {"name": "tmp/becomes-dir", "type": "dir"},
    {"name": "tmp/becomes-dir/inner", "data": b"inside\n"},
    {"name": "srv", "type": "dir"},
    {"name": "srv/.wh..wh..opq"},
    {"name": "srv/new", "data": b"the only file of srv\n"},
    {"name": ".wh.gone-dir"},
    {"name": "hl", "type": "dir"},
    {"name": "hl/one", "data": b"three names\n", "xattrs": {"user.k": "v"}},
    {"name": "hl/two", "type": "hardlink", "link": "hl/one"},
    {"name": "hl/three", "type": "hardlink", "link": "hl/one"},
    {"name": "dev", "type": "dir"},
    {"name": "dev/.wh.zero"},
    {"name": "dev/sda", "type": "block", "rdev": (8, 0)},
]
TOP = [
    {"name": "bin", "type": "dir"},
    {"name": "bin/tool", "data": b"#!/bin/true\n", "mode": 0o755},
    {"name": "usr", "type": "dir"},
    {"name": "usr/share", "type": "dir"},
    {"name": "usr/share/readme", "type": "symlink", "link": "/etc/motd", "mode": 0o777},
    {"name": "var", "type": "dir"},
    {"name": "var/lib", "type": "dir", "mode": 0o711},
    {"name": "var/lib/d", "data": b"above the opaque directory\n"},
    {"name": "data", "type": "dir"},
    {"name": "data/.wh.keep"},
    {"name": "data/added", "data": b"new at the top\n"},
    {"name": "hl", "type": "dir"},
    {"name": "hl/.wh.two"},
    {"name": "etc", "type": "dir", "mode": 0o755},
    {"name": "etc/hosts.link", "data": b"a file of its own now\n"},
]
LAYERS = [BOTTOM, MIDDLE, TOP]


# ---------------------------------------------------------------------------- the rule
def test_the_rule_for_one_directory():
    """stack_names, top layer first: whiteouts hide below, a non-directory ends a directory's stack, an
    opaque directory ends it after itself, and a layer's whiteout never hides its own name."""
    top = [
        (b"a", OTHER, "a2"),
        (b"d", DIRECTORY, "d2"),
        (b"w", WHITEOUT, None),
        (b"o", OPAQUE_DIRECTORY, "o2"),
    ]
    mid = [(b"a", OTHER, "a1"), (b"d", DIRECTORY, "d1"), (b"w", OTHER, "w1"), (b"o", DIRECTORY, "o1")]
    low = [(b"d", OTHER, "d0"), (b"x", OTHER, "x0"), (b"d2", DIRECTORY, "e0")]
    got = stack_names([top, mid, low])
    assert got == {b"a": ["a2"], b"d": ["d2", "d1"], b"o": ["o2"], b"x": ["x0"], b"d2": ["e0"]}
    # An OCI layer may hold NAME and a whiteout of NAME: its NAME shows, nothing of NAME below.
    same = [(b"n", WHITEOUT, None), (b"n", DIRECTORY, "n1")]
    assert stack_names([same, [(b"n", DIRECTORY, "n0")]]) == {b"n": ["n1"]}
    assert stack_names([[(b"n", WHITEOUT, None)], [(b"n", DIRECTORY, "n0")]]) == {}


# ---------------------------------------------------------------------------- building the images
def layer_tar(entries: list[dict]) -> bytes:
    """test_check.tar, with devices and fifos ("char", "block" with "rdev": (major, minor); "fifo")."""
    import io
    import tarfile

    special = {"char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
    plain = tarfile.open(fileobj=io.BytesIO(tar([e for e in entries if e.get("type") not in special])))
    buf = io.BytesIO()
    with plain, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        members = {m.name: m for m in plain.getmembers()}
        for e in entries:
            if e.get("type") in special:
                info = tarfile.TarInfo(e["name"])
                info.type, info.mode, info.mtime = special[e["type"]], 0o644, MTIME
                info.devmajor, info.devminor = e.get("rdev", (0, 0))
                tf.addfile(info)
            else:
                m = members[e["name"]]
                tf.addfile(m, plain.extractfile(m) if m.isreg() else None)
    return buf.getvalue()


def _write_layout(root: Path, blobs: list[Path]) -> Path:
    """An OCI layout of the EROFS layers ``blobs`` (lowest first), as containerd's converter lists them."""
    store = root / "blobs" / "sha256"
    store.mkdir(parents=True)

    def put(raw: bytes) -> dict:
        digest = hashlib.sha256(raw).hexdigest()
        (store / digest).write_bytes(raw)
        return {"digest": f"sha256:{digest}", "size": len(raw)}

    layers = [{"mediaType": "application/vnd.erofs.layer.v1", **put(b.read_bytes())} for b in blobs]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **put(json.dumps(config).encode()),
        },
        "layers": layers,
    }
    mdesc = {"mediaType": manifest["mediaType"], **put(json.dumps(manifest).encode())}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return root


def _layer_blobs(layout: Path) -> list[Path]:
    (mdesc,) = json.loads((layout / "index.json").read_text())["manifests"]
    store = layout / "blobs" / "sha256"
    manifest = json.loads((store / mdesc["digest"].split(":")[1]).read_bytes())
    return [store / d["digest"].split(":")[1] for d in manifest["layers"]]


@pytest.fixture(scope="module")
def images(tmp_path_factory, erofs_utils) -> dict[str, Path]:
    """The image of LAYERS as OCI layouts: converted by ours (plain, seekable), made by mkfs.erofs --aufs."""
    work = tmp_path_factory.mktemp("overlay")
    src = simple_layout(work / "src", [layer_tar(x) for x in LAYERS], ["gzip"] * len(LAYERS))
    out = {}
    for kind, opts in (("ours", ()), ("ours-seekable", ("--seekable",))):
        proc = run_cli("convert", src, work / kind, "--to", "erofs", *opts)
        assert proc.returncode == 0, proc.stderr.decode()
        out[kind] = work / kind
    blobs = []
    for i, layer in enumerate(LAYERS):
        (work / f"layer{i}.tar").write_bytes(layer_tar(layer))
        blobs.append(erofs_utils.mkfs(work / f"layer{i}.erofs", work / f"layer{i}.tar", "--tar=f", "--aufs"))
    out["mkfs"] = _write_layout(work / "mkfs", blobs)
    return out


# ---------------------------------------------------------------------------- the judge
def _mount(*argv) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


@contextlib.contextmanager
def kernel_overlay(blobs: list[Path], work: Path, erofs_utils):
    """The kernel's overlayfs, read-only, over the EROFS layers ``blobs`` (lowest first): each mounted by the
    kernel's EROFS through a loop device, or by erofsfuse where that fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting the kernel's overlayfs needs root")
    work.mkdir(parents=True, exist_ok=True)
    lowers: list[Path] = []
    with contextlib.ExitStack() as stack:
        for i, blob in enumerate(blobs):
            d = work / f"lower{i}"
            d.mkdir()
            if _mount("mount", "-t", "erofs", "-o", "loop,ro", blob, d):
                stack.callback(subprocess.run, ["umount", d], capture_output=True)
            else:
                stack.enter_context(erofs_utils.mounted(blob, d))
            lowers.append(d)
        merged = work / "merged"
        merged.mkdir()
        lowerdir = ":".join(str(d) for d in reversed(lowers))  # overlayfs lists the top layer first
        if not _mount("mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", merged):
            pytest.skip("the kernel's overlayfs does not mount here")
        stack.callback(subprocess.run, ["umount", merged], capture_output=True)
        yield merged


@pytest.fixture(scope="module")
def judge(images, erofs_utils, tmp_path_factory) -> dict[bytes, dict]:
    """The kernel's tree of the image mkfs.erofs made, checked against what the layers say it must be (so
    that a judge mounted wrongly cannot agree with a reader that is wrong the same way)."""
    work = tmp_path_factory.mktemp("judge")
    with kernel_overlay(_layer_blobs(images["mkfs"]), work, erofs_utils) as merged:
        want = extracted_tree(merged, nlink=True)
    names = set(want)
    for gone in (b"/var/gone", b"/var/lib/a", b"/var/lib/sub", b"/opt/x", b"/data/keep", b"/srv/old"):
        assert gone not in names, gone
    assert not [p for p in names if p.startswith(b"/gone-dir") or b".wh." in p or p.endswith(b"/two")]
    assert {p for p in names if p.startswith(b"/var/lib/")} == {b"/var/lib/c", b"/var/lib/d"}
    assert want[b"/opt"]["type"] == "file" and want[b"/tmp/becomes-dir"]["type"] == "dir"
    assert want[b"/usr/share/readme"]["target"] == b"/etc/motd"
    assert want[b"/var/lib"]["mode"] == 0o711 and want[b"/etc"]["mode"] == 0o755
    assert want[b"/hl/one"]["links"] == (b"/hl/one", b"/hl/three")
    assert "links" not in want[b"/etc/hosts"] and "links" not in want[b"/etc/hosts.link"]
    assert want[b"/bin/tool"]["size"] == 12 and want[b"/etc/motd"]["size"] == 9
    assert {p: want[p].get("rdev") for p in names if p.startswith(b"/dev/")} == {
        b"/dev/null": os.makedev(1, 3),
        b"/dev/fifo": None,
        b"/dev/sda": os.makedev(8, 0),
    }
    return want


def assert_same_tree(found: dict[bytes, dict], want: dict[bytes, dict], what: str) -> None:
    """``found`` is the kernel's tree ``want``, path by path and field by field."""
    problems = [f"{os.fsdecode(p)}: only in the kernel's overlay" for p in want.keys() - found.keys()]
    problems += [f"{os.fsdecode(p)}: only in ours" for p in found.keys() - want.keys()]
    for p in sorted(want.keys() & found.keys()):
        for k in sorted(want[p].keys() | found[p].keys()):
            if want[p].get(k) != found[p].get(k):
                problems.append(
                    f"{os.fsdecode(p)}: {k}: the kernel {want[p].get(k)!r}, ours {found[p].get(k)!r}"
                )
    assert not problems, f"{what}: {len(problems)} difference(s):\n" + "\n".join(problems[:30])


def _without(tree: dict[bytes, dict], *keys: str) -> dict[bytes, dict]:
    return {p: {k: v for k, v in e.items() if k not in keys} for p, e in tree.items()}


# ---------------------------------------------------------------------------- ours against the judge
def listed_tree(ref: Path) -> dict[bytes, dict]:
    """The tree ``ls -R --json`` says, each file's bytes from ``cat``, hard links by their group."""
    proc = run_cli("ls", "-R", "--json", ref)
    assert proc.returncode == 0, proc.stderr.decode()
    out: dict[bytes, dict] = {}
    groups: dict[int, list[bytes]] = {}
    for n in json.loads(proc.stdout):
        path = os.fsencode(n["path"])
        if path == b"/":
            continue
        e = {"type": n["type"], "mode": int(n["mode"], 8), "uid": n["uid"], "gid": n["gid"]}
        e.update(mtime=n["mtime"], nlink=n["nlink"])
        if n["type"] == "file":
            cat = run_cli("cat", ref, n["path"])
            assert cat.returncode == 0, cat.stderr.decode()
            assert len(cat.stdout) == n["size"], n["path"]
            e["sha256"], e["size"] = hashlib.sha256(cat.stdout).hexdigest(), n["size"]
        elif n["type"] == "symlink":
            e["target"] = os.fsencode(n["target"])
            del e["mode"]
        elif n["type"] in ("char", "block"):
            e["rdev"] = os.makedev(n["rdev"]["major"], n["rdev"]["minor"])
        e["xattrs"] = {
            os.fsencode(k): v.encode()
            for k, v in (n.get("xattrs") or {}).items()
            if _linux_keeps(n["type"], k.encode())
        }
        out[path] = e
        if "hardlink" in n:
            groups.setdefault(n["hardlink"], []).append(path)
    _group(out, groups.values())
    return out


@pytest.mark.parametrize("kind", ["ours", "ours-seekable", "mkfs"])
def test_ls_and_cat_show_the_kernels_tree(images, judge, kind):
    assert_same_tree(listed_tree(images[kind]), dict(judge), f"{kind}: ls -R --json and cat")
    assert_same_tree(listed_tree(f"oci:{images[kind]}"), dict(judge), f"oci:{kind}: ls -R --json and cat")


def test_an_oci_archive_reads_as_its_layout(images, tmp_path):
    archive = tmp_path / "image.tar"
    subprocess.run(["tar", "-cf", archive, "-C", images["ours-seekable"], "."], check=True)
    got = run_cli("ls", "-R", "-l", f"oci-archive:{archive}", "--cache-dir", tmp_path / "cache")
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == run_cli("ls", "-R", "-l", images["ours-seekable"]).stdout
    assert b"/var/lib/d" in got.stdout and b"/var/lib/a" not in got.stdout


@pytest.mark.parametrize("kind", ["ours", "ours-seekable", "mkfs"])
def test_unpack_writes_the_kernels_tree(images, judge, kind, tmp_path):
    proc = run_cli("unpack", images[kind], "--to-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr.decode()
    # Link counts are those of the names written (the image's inodes keep the counts of their own layer).
    assert_same_tree(extracted_tree(tmp_path / "out"), _without(judge, "nlink"), f"{kind}: unpack --to-dir")
    proc = run_cli("unpack", images[kind], "-o", tmp_path / "out.tar")
    assert proc.returncode == 0, proc.stderr.decode()
    (tmp_path / "fromtar").mkdir()
    subprocess.run(
        ["tar", "-xpf", tmp_path / "out.tar", "--xattrs", "--xattrs-include=*", "-C", tmp_path / "fromtar"],
        check=True,
    )
    assert_same_tree(extracted_tree(tmp_path / "fromtar"), _without(judge, "nlink"), f"{kind}: unpack -o")


@pytest.mark.parametrize("kind", ["ours-seekable", "mkfs"])
def test_our_mount_serves_the_kernels_tree(images, judge, kind, mounts):
    mp = mounts.mount(images[kind])
    assert_same_tree(extracted_tree(mp / "rootfs", nlink=True), dict(judge), f"{kind}: our mount")
    assert sorted(os.listdir(mp / "entries")) == sorted(b.name for b in _layer_blobs(images[kind]))
    mounts.umount(mp)


def test_layer_files_given_to_the_mount_are_overlaid(images, judge, mounts):
    """``mount L0 L1 L2 MNT``: EROFS layer files given lowest first are overlaid as an image's are."""
    mp = mounts.mount(*_layer_blobs(images["mkfs"]))
    assert_same_tree(extracted_tree(mp / "rootfs", nlink=True), dict(judge), "mount of the layer files")
    mounts.umount(mp)


def test_a_lookup_lists_only_the_directories_on_its_path(images):
    """Nothing is merged up front: finding /var/lib/d lists the root and /var of each layer, and /var/lib of
    the two layers above the opaque one's bottom (the top one and the opaque one itself)."""
    listed: list[tuple[int, int]] = []
    with open_layer(str(images["mkfs"])) as stack:
        r = stack.rafs
        for k, im in enumerate(r.images):
            real = im.readdir

            def counted(nid, include_dots=False, _real=real, _k=k):
                listed.append((_k, nid))
                return _real(nid, include_dots)

            im.readdir = counted
        node = r.lookup("/var/lib/d")
        assert b"".join(stack.read_file(node)) == b"above the opaque directory\n"
    assert sorted(k for k, _ in listed) == [0, 0, 1, 1, 1, 2, 2, 2], listed


# ---------------------------------------------------------------------------- diff, info, verify
def test_diff_reads_the_overlaid_tree(images, tmp_path):
    """Ours plain and seekable are the same tree; mkfs.erofs's image without its top layer differs from it
    where the top layer changes things, and nowhere else."""
    proc = run_cli("diff", images["ours"], images["ours-seekable"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    two = _write_layout(tmp_path / "two", _layer_blobs(images["mkfs"])[:2])
    proc = run_cli("diff", two, images["mkfs"])
    said = proc.stdout.decode()
    assert proc.returncode == 1, (said, proc.stderr.decode())
    changed = {line.split(":")[0] for line in said.splitlines()[:-1]}
    top = {"/var/lib/d", "/data/keep", "/data/added", "/hl/two", "/usr/share/readme", "/bin/tool"}
    assert top <= changed, said
    assert changed <= top | {
        "/var/lib",
        "/etc",
        "/etc/hosts.link",
        "/bin",
        "/data",
        "/hl",
        "/usr",
        "/usr/share",
        "/var",
        "/hl/one",
        "/hl/three",
    }, said


@pytest.mark.parametrize("kind", ["ours", "ours-seekable", "mkfs"])
def test_info_and_verify_take_each_layer(images, kind):
    blobs = _layer_blobs(images[kind])
    proc = run_cli("info", "--json", images[kind])
    assert proc.returncode == 0, proc.stderr.decode()
    got = json.loads(proc.stdout)
    assert got["kind"] == "erofs-stack"
    assert [one["digest"].split(":")[1] for one in got["layers"]] == [b.name for b in blobs]
    assert all(
        one["kind"] == "erofs" and ("seekable" in one) == (kind == "ours-seekable") for one in got["layers"]
    )
    proc = run_cli("verify", images[kind])
    said = proc.stdout.decode()
    assert proc.returncode == 0, (said, proc.stderr.decode())
    assert [line.split(":")[0] for line in said.splitlines() if not line.startswith(" ")] == [
        str(b) for b in blobs
    ]


def test_a_damaged_layer_is_named_by_verify(images, tmp_path):
    """verify checks every layer: a superblock of the middle layer that fails its checksum is found there and
    nowhere else; a layer blob that is not the one its descriptor digests is refused before anything is read."""
    blobs = _layer_blobs(images["mkfs"])
    raw = bytearray(blobs[1].read_bytes())
    raw[1024 + 70] ^= 0xFF  # in the volume name, which the superblock checksum covers
    (tmp_path / "middle.erofs").write_bytes(bytes(raw))
    layout = _write_layout(tmp_path / "damaged", [blobs[0], tmp_path / "middle.erofs", blobs[2]])
    proc = run_cli("verify", layout)
    said = proc.stdout.decode()
    assert proc.returncode == 1, (said, proc.stderr.decode())
    heads = [line for line in said.splitlines() if not line.startswith(" ")]
    assert len(heads) == 3 and "OK" in heads[0] and "OK" in heads[2] and "OK" not in heads[1], said
    assert "checksum" in said, said
    damaged = _layer_blobs(layout)[1]
    damaged.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    proc = run_cli("cat", layout, "/etc/motd")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "sha256" in err, err


def test_a_bad_layer_is_named(images, tmp_path):
    """A layer that is no EROFS image, or whose metadata does not decode, is named in one line."""
    blobs = _layer_blobs(images["mkfs"])
    (tmp_path / "tar.erofs").write_bytes(layer_tar(TOP))
    (tmp_path / "cut.erofs").write_bytes(blobs[1].read_bytes()[:1200])  # past the superblock only
    # Our layer's root inode lies past the block the superblock checksum covers (mkfs.erofs's lies inside it).
    ours = _layer_blobs(images["ours"])
    raw = bytearray(ours[1].read_bytes())
    root_nid, meta_blkaddr = (
        struct.unpack_from("<H", raw, 1024 + 14)[0],
        struct.unpack_from("<I", raw, 1024 + 40)[0],
    )
    raw[meta_blkaddr * 4096 + 32 * root_nid : meta_blkaddr * 4096 + 32 * root_nid + 2] = (
        b"\xff\xff"  # i_format
    )
    (tmp_path / "bad-root.erofs").write_bytes(bytes(raw))
    for name, layers, said in (
        ("not-erofs", [blobs[0], tmp_path / "tar.erofs"], "layer 2 of 2"),
        ("cut", [blobs[0], tmp_path / "cut.erofs", blobs[2]], None),
        ("bad-root", [ours[0], tmp_path / "bad-root.erofs", ours[2]], None),
    ):
        layout = _write_layout(tmp_path / name, layers)
        for argv in (("ls", "-R", layout), ("cat", layout, "/srv/new")):
            proc = run_cli(*argv)
            err = proc.stderr.decode()
            assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            # The cut layer is named by its blob: its digest is the one the layout gives it.
            assert (said or _layer_blobs(layout)[1].name) in err, err


def test_errors_are_one_line(images, tmp_path):
    proc = run_cli("verify", images["mkfs"], "--root-hash", "00" * 32)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "3 EROFS layers" in err
    proc = run_cli("cat", images["mkfs"], "/var/gone")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    # (The TUI shows such an image layer by layer: test_erofs_tui.)
    for command in ("chunks", "toc"):
        proc = run_cli(command, images["mkfs"])
        err = proc.stderr.decode()
        assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "3 EROFS layers" in err, err
