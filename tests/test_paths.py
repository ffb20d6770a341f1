"""Paths in an image resolve as the kernel resolves them: every symlink on the way, ``..`` after a link,
absolute and relative targets, 40 links at most; ``-P`` names the link itself.

The oracle is the kernel: the same tree is written to a directory and every probe path is resolved
there inside a chroot (a forked child), then compared with what the resolver finds in the packed layer.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from nydus_inspect.errors import UsageError
from nydus_inspect.layer import open_layer
from nydus_inspect.paths import MAX_SYMLINKS, PathError, resolve_in
from nydus_inspect.testing import Dir, File, Symlink, build_layer, lookup, read_file

CHAIN = {f"chain/l{i:02d}": Symlink(f"l{i + 1:02d}") for i in range(MAX_SYMLINKS + 1)}
CHAIN[f"chain/l{MAX_SYMLINKS + 1:02d}"] = Symlink("/etc/passwd")

# A usr-merged image with the link shapes Debian has.
TREE = {
    "bin": Symlink("usr/bin"),
    "lib": Symlink("usr/lib"),
    "usr/bin/bash": File(b"#!bash\n", mode=0o755),
    "usr/bin/mawk": File(b"mawk binary\n", mode=0o755),
    "usr/bin/awk": Symlink("/etc/alternatives/awk"),
    "etc/alternatives/awk": Symlink("/usr/bin/mawk"),
    "etc/passwd": b"root:x:0:0\n",
    "usr/lib/y": b"lib y\n",
    "usr/share/y": b"share y\n",
    "usr/share/dir": Symlink("../lib/x"),
    "usr/lib/x/inner": b"inner\n",
    "up": Symlink("../../../etc"),
    "loop/a": Symlink("b"),
    "loop/b": Symlink("a"),
    "dangling": Symlink("nowhere/at/all"),
    "self": Symlink("."),
    "tmp": Dir(mode=0o1777),
    **CHAIN,
}

PROBES = [
    "/bin/bash",
    "bin/bash",
    "/usr/bin/awk",
    "/bin/awk",
    "/usr/share/dir/inner",
    "/usr/share/dir/../y",  # the kernel goes up from /usr/lib/x: /usr/lib/y, not /usr/share/y
    "/lib/../bin/bash",
    "/up/passwd",
    "/self/self/self/etc/passwd",
    "/loop/a",
    "/dangling",
    "/etc/passwd/",
    "/etc/passwd/.",
    "/etc/passwd/x",
    "/bin/",
    "/nope",
    "/..",
    "/../../etc/passwd",
    "/chain/l02",  # l02 .. l41: 40 links, allowed
    "/chain/l01",  # 41 links: ELOOP
]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    layer = build_layer(TREE, d / "layer.blob", chunk_size=0x1000)
    return layer


def _kernel_view(root: str, probes: list[str], follow: bool) -> list:
    """Resolve each probe inside a chroot at ``root`` (a forked child): what the kernel says."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        out = []
        try:
            os.close(r)
            os.chroot(root)
            os.chdir("/")
            for p in probes:
                try:
                    st = os.stat(p, follow_symlinks=follow)
                except OSError as exc:
                    out.append(["error", exc.errno])
                    continue
                if os.path.stat.S_ISLNK(st.st_mode):
                    out.append(["symlink", os.readlink(p)])
                elif os.path.stat.S_ISDIR(st.st_mode):
                    out.append(["dir", sorted(os.listdir(p))])
                else:
                    with open(p, "rb") as f:
                        out.append(["file", f.read().decode()])
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _our_view(layer_path, probes: list[str], follow: bool) -> list:
    out = []
    with open_layer(str(layer_path)) as layer:
        r = layer.rafs
        for p in probes:
            try:
                node = resolve_in(r, p, follow=follow)
            except PathError as exc:
                out.append(["error", exc.errno])
                continue
            if node.type == "symlink":
                out.append(["symlink", node.target.decode()])
            elif node.type == "dir":
                out.append(["dir", sorted(c.path.rsplit(b"/", 1)[1].decode() for c in r.children(node))])
            else:
                out.append(["file", b"".join(layer.read_file(node)).decode()])
    return out


def _write_tree(root, spec) -> None:
    """The spec on disk, written with plain os calls (independent of the packer)."""
    for name in sorted(spec, key=lambda p: p.strip("/")):
        item = spec[name]
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(item, Symlink):
            os.symlink(item.target, path)
        elif isinstance(item, Dir):
            os.makedirs(path, exist_ok=True)
        else:
            data = item.data if isinstance(item, File) else item
            with open(path, "wb") as f:
                f.write(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot (the kernel oracle) needs root")
@pytest.mark.parametrize("follow", [True, False])
def test_resolution_agrees_with_the_kernel(image, tmp_path, follow):
    root = tmp_path / "root"
    root.mkdir()
    _write_tree(str(root), TREE)
    kernel = _kernel_view(str(root), PROBES, follow)
    ours = _our_view(image, PROBES, follow)
    for probe, k, o in zip(PROBES, kernel, ours, strict=True):
        assert o == k, f"{probe} (follow={follow}): kernel {k}, ours {o}"
    # The cases that matter are really exercised (not all errors, not all the same).
    got = dict(zip(PROBES, ours, strict=True))
    if follow:
        assert got["/bin/bash"] == ["file", "#!bash\n"]
        assert got["/usr/bin/awk"] == ["file", "mawk binary\n"]
        assert got["/usr/share/dir/../y"] == ["file", "lib y\n"]
        assert got["/chain/l02"] == ["file", "root:x:0:0\n"]
        assert got["/chain/l01"] == ["error", errno.ELOOP]
        assert got["/loop/a"] == ["error", errno.ELOOP]
    else:
        assert got["/usr/bin/awk"] == ["symlink", "/etc/alternatives/awk"]
        assert got["/bin/awk"] == ["symlink", "/etc/alternatives/awk"]


def test_errors_name_the_part_that_failed(image):
    with open_layer(str(image)) as layer:
        with pytest.raises(PathError, match=r"/usr/bin/nope does not exist") as info:
            resolve_in(layer.rafs, "/bin/nope")
        assert info.value.errno == errno.ENOENT and isinstance(info.value, UsageError)
        with pytest.raises(PathError, match=r"/etc/passwd is not a directory"):
            resolve_in(layer.rafs, "/etc/passwd/x")
        with pytest.raises(PathError, match=r"too many levels of symbolic links \(more than 40, at /loop/"):
            resolve_in(layer.rafs, "/loop/a")


def test_testing_helpers_follow_symlinks(image):
    assert read_file(image, "/bin/bash") == b"#!bash\n"
    assert read_file(image, "/usr/bin/awk") == b"mawk binary\n"
    assert lookup(image, "/usr/bin/awk", follow=False).target == b"/etc/alternatives/awk"
    assert lookup(image, "/bin").path == b"/usr/bin"


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, env=env
    )


def test_cat_and_ls_follow_symlinks(image):
    p = _cli("cat", image, "/bin/bash")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"#!bash\n", b"")
    assert _cli("cat", image, "/usr/bin/awk").stdout == b"mawk binary\n"
    p = _cli("cat", "-P", image, "/usr/bin/awk")
    assert p.returncode == 2 and b"is a symlink, not a regular file" in p.stderr
    assert _cli("ls", image, "/bin").stdout.decode().split() == [
        "/usr/bin/awk",
        "/usr/bin/bash",
        "/usr/bin/mawk",
    ]
    long = _cli("ls", "-l", "--no-dereference", image, "/bin").stdout.decode()
    assert long.startswith("lrwxrwxrwx") and long.rstrip().endswith("/bin -> usr/bin")
    p = _cli("cat", image, "/loop/a")
    assert (
        p.returncode == 2 and p.stderr.count(b"\n") == 1 and b"too many levels of symbolic links" in p.stderr
    )


def test_tui_path_search_follows_symlinks(image):
    pytest.importorskip("textual")
    from textual.widgets import Tree
    from tui_helpers import drive, press, type_prompt

    async def script(app, pilot):
        await press(app, pilot, "4")
        await type_prompt(app, pilot, "slash", "/bin/awk")
        assert app.screen.query_one("#tree", Tree).cursor_node.data.path == b"/usr/bin/mawk"

    drive([image], script)
