"""Image references to containerd EROFS images (``convert --to erofs``, plain and seekable): ``oci:DIR``, the
layout directory itself and ``docker://`` against a real registry open the image's one EROFS layer, so
info, ls and cat read the image (a seekable layer in a registry by frame, each checked); an image of several
EROFS layers reads as its layers overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_util import run_cli
from registry_util import Proxy
from test_check import UPPER, image, lower

KINDS = {"plain": (), "seekable": ("--seekable", "--dm-verity")}


def cli(tmp_path: Path, *args):
    """The command with a cache of the test's own; (rc, stdout, stderr) as text."""
    proc = run_cli(*args, "--cache-dir", tmp_path / "cache")
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def erofs_image(tmp_path: Path, layers: list[list[dict]], *opts: str) -> tuple[Path, list[dict]]:
    """(layout, layer descriptors) of the source image of ``layers`` converted with ``--to erofs``."""
    src = image(tmp_path / "erofs-src", layers)
    out = tmp_path / "erofs"
    proc = run_cli("convert", src, out, "--to", "erofs", *opts)
    assert proc.returncode == 0, proc.stderr.decode()
    (mdesc,) = json.loads((out / "index.json").read_text())["manifests"]
    manifest = json.loads((out / "blobs" / "sha256" / mdesc["digest"].split(":")[1]).read_bytes())
    return out, manifest["layers"]


def reads_as_its_layer(tmp_path: Path, ref: str, blob: Path, media_type: str) -> None:
    """info, ls -R -l and cat of ``ref`` say what they say of the layer file ``blob`` itself."""
    rc, said, err = cli(tmp_path, "info", "--json", ref)
    assert rc == 0, err
    got = json.loads(said)
    assert got["kind"] == "erofs"
    assert ("seekable" in got) == media_type.endswith("+zstd")
    want = json.loads(cli(tmp_path, "info", "--json", blob)[1])
    assert got["erofs"] == want["erofs"] and got.get("seekable") == want.get("seekable")
    rc, said, err = cli(tmp_path, "ls", "-R", "-l", ref)
    assert rc == 0, err
    assert said == cli(tmp_path, "ls", "-R", "-l", blob)[1]
    assert "/bin/sh -> tool" in said and "/etc/hosts.link" in said
    rc, said, err = cli(tmp_path, "cat", ref, "/etc/os-release")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    proc = run_cli("cat", ref, "/bin/sh", "--cache-dir", tmp_path / "cache")  # through the symlink
    assert proc.returncode == 0 and proc.stdout == bytes(range(256)) * 4096, proc.stderr.decode()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_oci_layout_of_an_erofs_image(tmp_path, kind):
    out, (layer,) = erofs_image(tmp_path, [lower()], *KINDS[kind])
    blob = out / "blobs" / "sha256" / layer["digest"].split(":")[1]
    for ref in (f"oci:{out}", f"oci:{out}:latest", str(out)):
        reads_as_its_layer(tmp_path, ref, blob, layer["mediaType"])


def test_a_seekable_layer_is_held_to_its_annotations(tmp_path):
    """The chunk table of a seekable layer opened from an image is read where its descriptor's annotation
    says and checked against the digest it records: an annotation that does not match is one line."""
    import hashlib

    out, (layer,) = erofs_image(tmp_path, [lower()], *KINDS["seekable"])
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    manifest["layers"][0]["annotations"]["dev.containerd.erofs.zstd.chunk_digest"] = "sha512:" + "0" * 128
    raw = json.dumps(manifest).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (blobs / digest).write_bytes(raw)
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(raw))
    (out / "index.json").write_text(json.dumps(index))
    rc, _, err = cli(tmp_path, "ls", f"oci:{out}")
    assert rc == 2 and err.count("\n") == 1 and "annotation" in err, err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_registry_erofs_image(registry, tmp_path, kind):
    """Pushed by our convert straight from the source layout, read back from the registry: a plain layer is
    fetched whole (and checked against its digest), a seekable one by frame; either reads as the file does."""
    src = image(tmp_path / "src", [lower()])
    ref = f"docker://{registry}/erofs:{kind}"
    rc, _, err = cli(tmp_path, "convert", src, ref, "--to", "erofs", *KINDS[kind])
    assert rc == 0, err
    local, (layer,) = erofs_image(tmp_path, [lower()], *KINDS[kind])
    blob = local / "blobs" / "sha256" / layer["digest"].split(":")[1]
    reads_as_its_layer(tmp_path, ref, blob, layer["mediaType"])


def fetched(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("registry: fetched"))
    return int(line.split()[2])


def with_blobs() -> list[dict]:
    """lower() and 2 MiB of incompressible files after it: 33 frames of 64 KiB or more."""
    import random

    rng = random.Random(7)
    return lower() + [{"name": f"var/blob{i}", "data": rng.randbytes(256 << 10)} for i in range(8)]


@pytest.fixture
def frames_ref(registry, tmp_path):
    """(the seekable image of with_blobs() in 64 KiB frames, pushed; its layer file from the same convert to a
    layout) for each --seekable-hash, by name."""
    src = image(tmp_path / "src", [with_blobs()])
    out = {}
    for algo in ("sha512", "none"):
        opts = ("--seekable", "--chunk-size", "0x10000", "--seekable-hash", algo)
        ref = f"docker://{registry}/erofs:frames-{algo}"
        rc, _, err = cli(tmp_path, "convert", src, ref, "--to", "erofs", *opts)
        assert rc == 0, err
        layout = tmp_path / f"local-{algo}"
        assert run_cli("convert", src, layout, "--to", "erofs", *opts).returncode == 0
        (mdesc,) = json.loads((layout / "index.json").read_text())["manifests"]
        (layer,) = json.loads((layout / "blobs" / "sha256" / mdesc["digest"].split(":")[1]).read_bytes())[
            "layers"
        ]
        out[algo] = (ref, layout / "blobs" / "sha256" / layer["digest"].split(":")[1])
    return out


def test_a_seekable_layer_in_a_registry_is_read_by_frame(frames_ref, tmp_path):
    """Its chunk table where the annotation says (checked against the annotation's digest) and the frames a
    read needs, each checked against the table: cat of one small file fetches a small part of the layer, and
    every command reads what it reads of the layer file."""
    ref, blob = frames_ref["sha512"]
    rc, said, err = cli(tmp_path, "cat", ref, "/etc/os-release", "--stats")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    assert 0 < fetched(err) < blob.stat().st_size // 4, (fetched(err), blob.stat().st_size)
    reads_as_its_layer(tmp_path, ref, blob, "application/vnd.erofs.layer.v1+zstd")
    got = run_cli("cat", ref, "/var/blob5", "--cache-dir", tmp_path / "cache")
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == run_cli("cat", blob, "/var/blob5").stdout and len(got.stdout) == 256 << 10


def test_a_seekable_layer_without_frame_digests_is_fetched_whole(frames_ref, tmp_path):
    """Frames the table records no digest of could not be checked one by one: the layer is fetched whole and
    checked against its descriptor's digest."""
    ref, blob = frames_ref["none"]
    rc, said, err = cli(tmp_path, "cat", ref, "/etc/os-release", "--stats")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    assert fetched(err) >= blob.stat().st_size, (fetched(err), blob.stat().st_size)


@pytest.fixture
def proxy(registry):
    """A fault proxy in front of the test's registry (registry_util.Proxy)."""
    p = Proxy(registry)
    yield p
    p.close()


def test_a_registry_ignoring_range_serves_a_seekable_layer_whole(frames_ref, registry, proxy, tmp_path):
    ref, blob = frames_ref["sha512"]
    proxy.ignore_range = True
    rc, said, err = cli(tmp_path, "cat", ref.replace(registry, proxy.address), "/etc/os-release", "--stats")
    assert rc == 0 and said == 'NAME="test"\n' * 300, err
    assert fetched(err) >= blob.stat().st_size, (fetched(err), blob.stat().st_size)


def test_a_frame_the_registry_alters_is_refused(frames_ref, registry, proxy, tmp_path):
    ref, blob = frames_ref["sha512"]
    proxy.fault_path = f"/blobs/sha256:{blob.name}"  # the layer's ranges, not the manifest or config
    # Every range is altered (the table's too): the one that is read first is refused, in one line.
    proxy.faults = ["corrupt"] * 50
    rc, _, err = cli(tmp_path, "cat", ref.replace(registry, proxy.address), "/var/blob3")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "seekable erofs" in err, err


def overlaid_listing(tmp_path: Path, ref: str) -> None:
    """``ls -R`` of the image of [lower(), UPPER] shows the layers overlaid: /var/gone, which the upper layer
    removes, is gone, /var/new is there, and no whiteout shows."""
    rc, said, err = cli(tmp_path, "ls", "-R", ref)
    assert rc == 0, err
    names = said.split()
    assert "/var/new" in names and "/var/gone" not in names and "/etc/hosts.link" in names, said
    rc, said, err = cli(tmp_path, "cat", ref, "/var/new")
    assert rc == 0 and said == "new\n", err
    rc, _, err = cli(tmp_path, "cat", ref, "/var/gone")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_several_erofs_layers_read_as_one_tree(tmp_path, kind):
    out, layers = erofs_image(tmp_path, [lower(), UPPER], *KINDS[kind])
    assert len(layers) == 2
    for ref in (f"oci:{out}", str(out)):
        overlaid_listing(tmp_path, ref)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_registry_image_of_several_erofs_layers(registry, tmp_path, kind):
    """Pushed by our convert, read back from the registry: a plain layer fetched whole, a seekable one by frame
    (each in a registry session of its own); ``info`` says each layer."""
    src = image(tmp_path / "src", [lower(), UPPER])
    ref = f"docker://{registry}/erofs-stack:{kind}"
    rc, _, err = cli(tmp_path, "convert", src, ref, "--to", "erofs", *KINDS[kind])
    assert rc == 0, err
    overlaid_listing(tmp_path, ref)
    rc, said, err = cli(tmp_path, "info", "--json", ref)
    assert rc == 0, err
    got = json.loads(said)
    assert got["kind"] == "erofs-stack" and len(got["layers"]) == 2
    assert all(("seekable" in one) == (kind == "seekable") for one in got["layers"])
