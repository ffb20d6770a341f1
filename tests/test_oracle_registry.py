"""`nydusify check` on an image our `convert` wrote: the source OCI image and our nydus image are pushed to
a real registry (Debian's docker-registry on 127.0.0.1, started here) with skopeo, and nydusify checks the
manifest, config, bootstrap and the two mounted file systems (the nydus one through the real nydusd)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from fixtures_util import fixture_tars_fixture, run_cli, source_tar  # noqa: F401
from registry_util import push
from test_convert import simple_layout


def _unmount_below(work: Path) -> None:
    """nydusify leaves its nydusd mounts behind when a check fails: take them down."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(str(work) + "/")]
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True)


def nydusify_check(oracle, source: str, target: str, work: Path) -> subprocess.CompletedProcess:
    # nydusify puts nydusd's API socket deep below its work directory, and a socket path has at most 107
    # bytes: its work directory is a short one of its own, not one below pytest's tmp_path.
    short = Path(tempfile.mkdtemp(prefix="nyc-", dir="/tmp"))
    try:
        # nydusify starts nydusd without --rlimit-nofile, and nydusd's default (a million) may be refused here.
        wrapper = short / "nydusd"
        wrapper.write_text(f'#!/bin/sh\nexec {oracle.nydusd} "$@" --rlimit-nofile 0\n')
        wrapper.chmod(0o755)
        return oracle.run(
            "nydusify", "check", "--source", source, "--target", target, "--source-insecure", "--target-insecure",
            "--nydus-image", oracle.nydus_image, "--nydusd", wrapper, "--work-dir", short / "w", ok=False,
        )  # fmt: skip
    finally:
        _unmount_below(short)
        shutil.rmtree(short, ignore_errors=True)


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in entries:
            blob = data.get(info.name)
            if blob is not None:
                info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob) if blob is not None else None)
    return buf.getvalue()


def _info(name: str, kind=tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_700_000_000, link
    return info


def upper_layer() -> bytes:
    """A second layer: a symlink as tar writes one (mode 0777), a hard link, and whiteouts over the first."""
    return _tar(
        [
            _info("etc", tarfile.DIRTYPE, 0o755),
            _info("etc/conf"),
            _info("etc/link", tarfile.SYMTYPE, 0o777, "conf"),
            _info("etc/hard", tarfile.LNKTYPE, 0o644, "etc/conf"),
            _info(".wh.copy-1"),
        ],
        {"etc/conf": b"key = value\n" * 100},
    )


def test_nydusify_check_passes_on_our_conversion(request, oracle, fuse_ok, registry, tmp_path):
    tars = [source_tar(request, "fixture:dedup.tar").read_bytes(), upper_layer()]
    src = simple_layout(tmp_path / "in", tars, ["gzip", "plain"])
    ours = tmp_path / "ours"
    proc = run_cli("convert", src, ours)
    assert proc.returncode == 0, proc.stderr
    push(src, f"{registry}/src:latest")
    push(ours, f"{registry}/nydus:latest")
    proc = nydusify_check(oracle, f"{registry}/src:latest", f"{registry}/nydus:latest", tmp_path)
    said = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, said[-3000:]
    assert "comparing filesystem" in said


def test_nydusify_check_compares_the_trees(request, oracle, fuse_ok, registry, tmp_path):
    """The check is not vacuous: it finds the one difference between nydus and an OCI mount on a layer
    whose symlink has mode 0755 in its tar (nydus keeps the tar's mode, Linux shows 0777), in our
    conversion and in the snapshotter converter's alike."""
    tars = [source_tar(request, "vector:all-entry-type.tar").read_bytes()]
    src = simple_layout(tmp_path / "in", tars, ["gzip"])
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert run_cli("convert", src, ours).returncode == 0
    shutil.copytree(src, theirs)
    oracle.run("nydus-converter", "convert", "--builder", oracle.nydus_image, "--oci", src, theirs)
    push(src, f"{registry}/src:latest")
    for name, layout in (("ours", ours), ("theirs", theirs)):
        push(layout, f"{registry}/{name}:latest")
        proc = nydusify_check(oracle, f"{registry}/src:latest", f"{registry}/{name}:latest", tmp_path / name)
        said = proc.stderr.decode(errors="replace")
        assert proc.returncode != 0 and "symlink1.txt" in said and "file not match" in said, (
            name,
            said[-2000:],
        )
