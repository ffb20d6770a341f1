"""convert: an OCI image layout -> a nydus image layout, as the nydus snapshotter's converter writes it (issue 3).

The input layouts are written here by hand (index.json, manifests, configs, gzip / zstd / plain layers, OCI and
Docker media types, a nested multi-platform index). The output is checked blob by blob: every descriptor
resolves to a blob of the right sha256 and size; media types, annotations, diff_ids, history and the index's
OS feature are the seed's; the image's tree (``ls -R --json`` and ``unpack`` on the layout) equals the layers
applied with OCI whiteout rules; converting again is a no-op; and ``skopeo`` (Debian) opens and copies it.
"""

from __future__ import annotations

import filecmp
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from conftest import REQUIRE_VECTORS
from merge_fixtures import (
    fails,
    layer_tars,
    listing_differences,
    make_tar,
    noise,
    ok,
    reference_files,
    reference_tree,
)

from nydus_inspect import diff
from nydus_inspect.layer import KIND_BLOB_TOC, open_layer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = OCI_TAR + "+gzip"
OCI_ZSTD = OCI_TAR + "+zstd"
NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
REF_NAME = "org.opencontainers.image.ref.name"
HISTORY_ENTRY = {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}


# ---------------------------------------------------------------------------- writing input layouts
class LayoutWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(self, data: bytes, media_type: str, **extra) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}

    def image(
        self,
        tars: list[bytes],
        compressions: list[str],
        *,
        docker: bool = False,
        arch: str = "amd64",
        platform_in_desc: bool = False,
    ) -> dict:
        """Write layers, config and manifest; the manifest's descriptor."""
        layers = []
        for data, comp in zip(tars, compressions):
            if docker:
                layers.append(self.put(gzip.compress(data, mtime=0), DOCKER_GZIP))
            elif comp == "gzip":
                layers.append(self.put(gzip.compress(data, mtime=0), OCI_GZIP))
            elif comp == "zstd":
                layers.append(self.put(zstandard.ZstdCompressor().compress(data), OCI_ZSTD))
            else:
                layers.append(self.put(data, OCI_TAR))
        config = {
            "created": "2024-01-02T03:04:05Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars],
            },
            "history": [
                {"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"} for i in range(len(tars))
            ],
        }
        cfg = self.put(json.dumps(config).encode(), DOCKER_CONFIG if docker else OCI_CONFIG)
        mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest = {"schemaVersion": 2, "mediaType": mt, "config": cfg, "layers": layers}
        extra = {"platform": {"architecture": arch, "os": "linux"}} if platform_in_desc else {}
        return self.put(json.dumps(manifest, indent=2).encode(), mt, **extra)

    def index(self, manifests: list[dict]) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def simple_layout(root: Path, tars: list[bytes], compressions: list[str], docker: bool = False) -> Path:
    w = LayoutWriter(root)
    desc = w.image(tars, compressions, docker=docker)
    desc["annotations"] = {REF_NAME: "latest"}
    w.index([desc])
    return root


# ---------------------------------------------------------------------------- reading output layouts
def blob(root: Path, desc: dict) -> bytes:
    """The blob of ``desc``, checked: present, of the stated size and sha256."""
    algo, hx = desc["digest"].split(":")
    assert algo == "sha256"
    path = root / "blobs" / "sha256" / hx
    assert path.is_file(), f"{desc['digest']} is missing"
    data = path.read_bytes()
    assert len(data) == desc["size"], desc
    assert hashlib.sha256(data).hexdigest() == hx, desc
    return data


def read_json(root: Path, desc: dict) -> dict:
    return json.loads(blob(root, desc))


def walk_images(root: Path) -> list[tuple[dict, dict, dict]]:
    """(descriptor, manifest, config) of every image; checks every blob referenced on the way, and that no
    other blob is in the layout."""
    referenced = set()
    out = []

    def visit(index: dict) -> None:
        for desc in index["manifests"]:
            referenced.add(desc["digest"])
            doc = read_json(root, desc)
            if desc["mediaType"] == OCI_INDEX:
                visit(doc)
                continue
            config = read_json(root, doc["config"])
            referenced.add(doc["config"]["digest"])
            for layer in doc["layers"]:
                blob(root, layer)
                referenced.add(layer["digest"])
            out.append((desc, doc, config))

    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    visit(json.loads((root / "index.json").read_text()))
    present = {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").iterdir()}
    assert present == referenced, (
        f"unreferenced blobs: {present - referenced}, missing: {referenced - present}"
    )
    return out


def check_nydus_image(
    root: Path, desc: dict, manifest: dict, config: dict, source_config: dict, bootstrap_media_type: str
) -> list[dict]:
    """The seed's layout of a converted image; returns the blob layers."""
    *blobs, boot = manifest["layers"]
    for b in blobs:
        assert b["mediaType"] == NYDUS_BLOB
        assert b["annotations"] == {"containerd.io/snapshot/nydus-blob": "true"}
        with open_layer(str(root / "blobs" / "sha256" / b["digest"].split(":")[1])) as layer:
            assert layer.kind == KIND_BLOB_TOC
    assert boot["mediaType"] == bootstrap_media_type
    assert boot["annotations"] == {
        "containerd.io/snapshot/nydus-bootstrap": "true",
        "containerd.io/snapshot/nydus-fs-version": "6",
    }
    boot_tar = gzip.decompress(blob(root, boot))
    with tarfile.open(fileobj=io.BytesIO(boot_tar)) as tf:
        assert [(m.name, m.mode) for m in tf.getmembers()] == [("image", 0o755), ("image/image.boot", 0o444)]
    # diff_ids: each blob's own digest (its uncompressed form), then the bootstrap tar's sha256.
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [b["digest"] for b in blobs] + [f"sha256:{hashlib.sha256(boot_tar).hexdigest()}"],
    }
    assert config["history"] == source_config["history"] + [HISTORY_ENTRY]
    for key in ("created", "architecture", "os", "config"):
        assert config[key] == source_config[key]
    assert desc["platform"]["os.features"] == ["nydus.remoteimage.v1"]
    assert desc["platform"]["architecture"] == source_config["architecture"]
    assert desc["platform"]["os"] == "linux"
    return blobs


def source_image(root: Path, index_pos: int = 0) -> tuple[dict, dict]:
    desc = json.loads((root / "index.json").read_text())["manifests"][index_pos]
    manifest = read_json(root, desc)
    return manifest, read_json(root, manifest["config"])


@pytest.fixture(scope="module")
def tars() -> list[bytes]:
    return layer_tars()


@pytest.fixture(scope="module")
def converted(tars, tmp_path_factory) -> tuple[Path, Path]:
    """(input layout, converted layout) of the fixture layers as gzip, zstd and plain OCI layers."""
    where = tmp_path_factory.mktemp("convert")
    src = simple_layout(where / "in", tars, ["gzip", "zstd", "plain"])
    out = where / "out"
    res = json.loads(ok("convert", src, out, "--json"))
    assert res["changed"] and len(res["images"]) == 1 and res["images"][0]["converted"]
    return src, out


# ---------------------------------------------------------------------------- the converted layout
def test_converted_layout_is_the_seeds(converted, tars):
    src, out = converted
    [(desc, manifest, config)] = walk_images(out)
    src_manifest, src_config = source_image(src)
    assert desc["mediaType"] == OCI_MANIFEST and manifest["mediaType"] == OCI_MANIFEST
    assert desc["annotations"] == {REF_NAME: "latest"}
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    blobs = check_nydus_image(out, desc, manifest, config, src_config, OCI_GZIP)
    assert len(blobs) == 3
    # The blob digests are the merged bootstrap's blob ids, in its table order.
    boot_layer = out / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    with open_layer(str(boot_layer)) as layer:
        assert [f"sha256:{b.id}" for b in layer.rafs.blobs] == [b["digest"] for b in blobs]


def test_converted_tree_equals_applied_layers(converted, tars, tmp_path):
    _, out = converted
    listing = json.loads(ok("ls", "-R", "--json", out))
    assert listing_differences(listing, tars) == []
    tar = tmp_path / "image.tar"
    ok("unpack", out, "-o", tar, "-q")
    assert [str(d) for d in diff.compare(reference_tree(tars), diff.describe_tar(str(tar)))] == []
    want = reference_files(tars)
    assert ok("cat", out, "/bin/big") == want["/bin/big"]
    info = json.loads(ok("info", out, "--json"))
    assert info["kind"] == "bootstrap-layer" and len(info["bootstrap"]["blobs"]) == 3


def test_reconverting_is_a_no_op(converted, tmp_path):
    _, out = converted
    again = tmp_path / "again"
    res = json.loads(ok("convert", out, again, "--json"))
    assert not res["changed"] and not res["images"][0]["converted"]
    cmp = filecmp.dircmp(out, again)

    def same(c: filecmp.dircmp) -> None:
        assert not c.left_only and not c.right_only and not c.funny_files, (c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors
        for sub in c.subdirs.values():
            same(sub)

    same(cmp)


def test_docker_media_types(tars, tmp_path):
    src = simple_layout(tmp_path / "in", tars, ["gzip"] * 3, docker=True)
    out = tmp_path / "out"
    ok("convert", src, out)
    [(desc, manifest, config)] = walk_images(out)
    _, src_config = source_image(src)
    assert desc["mediaType"] == DOCKER_MANIFEST and manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    check_nydus_image(out, desc, manifest, config, src_config, DOCKER_GZIP)
    assert listing_differences(json.loads(ok("ls", "-R", "--json", out)), tars) == []


def test_dropped_blobs_leave_the_manifest(tmp_path):
    """A layer whose files are all whited out, and one without file data, have no blob in the merged table:
    the manifest, diff_ids and blob directory do not list them."""
    layers = [
        make_tar([("dir", ".", 0o755), ("file", "keep", noise("keep", 5000), 0o644)]),
        make_tar(
            [("dir", ".", 0o755), ("dir", "doomed", 0o755), ("file", "doomed/f", noise("d", 5000), 0o644)]
        ),
        make_tar([("dir", ".", 0o755), ("dir", "empty", 0o755)]),
        make_tar([("dir", ".", 0o755), ("wh", "doomed"), ("file", "top", b"top\n", 0o644)]),
    ]
    src = simple_layout(tmp_path / "in", layers, ["gzip", "plain", "zstd", "gzip"])
    out = tmp_path / "out"
    ok("convert", src, out)
    [(desc, manifest, config)] = walk_images(out)
    _, src_config = source_image(src)
    blobs = check_nydus_image(out, desc, manifest, config, src_config, OCI_GZIP)
    assert len(blobs) == 2
    assert listing_differences(json.loads(ok("ls", "-R", "--json", out)), layers) == []


def test_nested_index_and_platforms(tars, tmp_path):
    small = [make_tar([("dir", ".", 0o755), ("file", "arm", b"arm64 image\n", 0o644)])]
    src = tmp_path / "in"
    w = LayoutWriter(src)
    amd = w.image(tars, ["gzip", "zstd", "plain"], platform_in_desc=True)
    arm = w.image(small, ["gzip"], arch="arm64", platform_in_desc=True)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd, arm]}
    idesc = w.put(json.dumps(index).encode(), OCI_INDEX, annotations={REF_NAME: "multi"})
    w.index([idesc])

    # Default: linux/amd64 only; the one-manifest index collapses into that manifest (as the seed does).
    out = tmp_path / "amd64"
    ok("convert", src, out)
    top = json.loads((out / "index.json").read_text())
    [(desc, manifest, config)] = walk_images(out)
    assert top["manifests"] == [desc]
    assert desc["mediaType"] == OCI_MANIFEST and desc["annotations"] == {REF_NAME: "multi"}
    assert desc["platform"] == {
        "architecture": "amd64",
        "os": "linux",
        "os.features": ["nydus.remoteimage.v1"],
    }
    assert listing_differences(json.loads(ok("ls", "-R", "--json", out)), tars) == []

    # Both: the nested index is rewritten, each manifest with the OS feature.
    out = tmp_path / "all"
    ok("convert", src, out, "--platform", "all")
    top = json.loads((out / "index.json").read_text())
    assert top["manifests"][0]["mediaType"] == OCI_INDEX and top["manifests"][0]["annotations"] == {
        REF_NAME: "multi"
    }
    images = walk_images(out)
    assert [d["platform"]["architecture"] for d, _, _ in images] == ["amd64", "arm64"]
    assert all(d["platform"]["os.features"] == ["nydus.remoteimage.v1"] for d, _, _ in images)
    # Reading a layout of several images picks linux/amd64, as convert does by default.
    assert listing_differences(json.loads(ok("ls", "-R", "--json", out)), tars) == []

    out = tmp_path / "arm64"
    ok("convert", src, out, "--platform", "linux/arm64")
    [(desc, manifest, config)] = walk_images(out)
    assert desc["platform"]["architecture"] == "arm64"
    assert ok("cat", out, "/arm") == b"arm64 image\n"
    assert "no image for linux/s390x" in fails("convert", src, tmp_path / "none", "--platform", "linux/s390x")


# ---------------------------------------------------------------------------- a standard tool
def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        if REQUIRE_VECTORS:
            pytest.fail("skopeo (Debian package skopeo) is not installed (required in CI)")
        pytest.skip("skopeo (Debian package skopeo) is not installed")
    return path


def test_skopeo_opens_and_copies_the_converted_layout(converted, tmp_path):
    skopeo = _skopeo()
    _, out = converted
    [(desc, manifest, config)] = walk_images(out)
    proc = subprocess.run([skopeo, "inspect", f"oci:{out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["Digest"] == desc["digest"]
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    proc = subprocess.run(
        [skopeo, "inspect", "--config", f"oci:{out}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rootfs"] == config["rootfs"]
    # A copy reads and verifies every blob against its descriptor.
    proc = subprocess.run(
        [skopeo, "copy", "--quiet", f"oci:{out}", f"dir:{tmp_path / 'copy'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text()) == manifest


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def small_layout(tmp_path) -> Path:
    return simple_layout(
        tmp_path / "in", [make_tar([("dir", ".", 0o755), ("file", "f", b"f\n", 0o644)])], ["gzip"]
    )


def _only(root: Path, kind: str) -> Path:
    _, manifest = None, read_json(root, json.loads((root / "index.json").read_text())["manifests"][0])
    desc = manifest["layers"][0] if kind == "layer" else manifest["config"]
    return root / "blobs" / "sha256" / desc["digest"].split(":")[1]


def test_missing_index_json(small_layout, tmp_path):
    (small_layout / "index.json").unlink()
    assert "no index.json" in fails("convert", small_layout, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_layout(tmp_path):
    assert "no oci-layout" in fails("convert", tmp_path, tmp_path / "out")


def test_missing_blob(small_layout, tmp_path):
    path = _only(small_layout, "layer")
    path.unlink()
    err = fails("convert", small_layout, tmp_path / "out")
    assert path.name in err and "missing" in err and "layer 0" in err


def test_digest_mismatch(small_layout, tmp_path):
    path = _only(small_layout, "layer")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    err = fails("convert", small_layout, tmp_path / "out")
    assert "sha256" in err and path.name in err


def test_unsupported_media_type(small_layout, tmp_path):
    mdesc = json.loads((small_layout / "index.json").read_text())["manifests"][0]
    manifest = read_json(small_layout, mdesc)
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+encrypted"
    raw = json.dumps(manifest).encode()
    hx = hashlib.sha256(raw).hexdigest()
    (small_layout / "blobs" / "sha256" / hx).write_bytes(raw)
    mdesc.update(digest=f"sha256:{hx}", size=len(raw))
    (small_layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    err = fails("convert", small_layout, tmp_path / "out")
    assert "unsupported layer media type" in err and "+encrypted" in err


def test_output_must_be_new_and_nothing_is_left_behind(small_layout, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert "already exists" in fails("convert", small_layout, tmp_path / "taken")
    # A failure half-way (a corrupt layer) leaves neither the output nor a temporary directory.
    path = _only(small_layout, "layer")
    data = path.read_bytes()
    bad = gzip.compress(b"this is not a tar archive" * 100)
    path.write_bytes(bad)
    mdesc = json.loads((small_layout / "index.json").read_text())["manifests"][0]
    manifest = read_json(small_layout, mdesc)
    hx = hashlib.sha256(bad).hexdigest()
    os.rename(path, small_layout / "blobs" / "sha256" / hx)
    manifest["layers"][0].update(digest=f"sha256:{hx}", size=len(bad))
    raw = json.dumps(manifest).encode()
    mhx = hashlib.sha256(raw).hexdigest()
    (small_layout / "blobs" / "sha256" / mhx).write_bytes(raw)
    mdesc.update(digest=f"sha256:{mhx}", size=len(raw))
    (small_layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    before = sorted(os.listdir(tmp_path))
    fails("convert", small_layout, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == before
    assert data  # the original layer was a real tar


def test_layout_of_a_non_nydus_image(small_layout):
    assert "not a nydus image" in fails("ls", small_layout)
