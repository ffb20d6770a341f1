"""Image references to containerd EROFS images (``convert --to erofs``, plain and seekable): ``oci:DIR``, the
layout directory itself and ``docker://`` against a real registry open the image's one EROFS layer, so
info, ls and cat read the image; an image of several EROFS layers is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_util import run_cli
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
    """Pushed by our convert straight from the source layout, read back from the registry: the layer is
    fetched whole (and checked against its digest), then read as the file is."""
    src = image(tmp_path / "src", [lower()])
    ref = f"docker://{registry}/erofs:{kind}"
    rc, _, err = cli(tmp_path, "convert", src, ref, "--to", "erofs", *KINDS[kind])
    assert rc == 0, err
    local, (layer,) = erofs_image(tmp_path, [lower()], *KINDS[kind])
    blob = local / "blobs" / "sha256" / layer["digest"].split(":")[1]
    reads_as_its_layer(tmp_path, ref, blob, layer["mediaType"])


def test_several_erofs_layers_are_refused_in_one_line(tmp_path):
    """Overlaying the layers is the mount's business: reading one of them as the image would show a tree the
    image does not have (here /var/gone, which the upper layer removes)."""
    out, layers = erofs_image(tmp_path, [lower(), UPPER])
    assert len(layers) == 2
    for ref in (f"oci:{out}", str(out)):
        rc, _, err = cli(tmp_path, "ls", "-R", ref)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "2 EROFS layers" in err
