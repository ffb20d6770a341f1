"""The other layer kinds nydus writes, in our readers: the real `nydus-image create` makes each from the
fixture tars, the vector tars, a tar of many small files built here (and the Debian tar when present); the
real `nydusd` mounts it; our `ls -R --json`, `cat` of every file (through diff.describe), `verify`,
`unpack` and our own FUSE mount give the tree and bytes nydusd serves. `verify` catches a flipped bit in
the chunk data, and what cannot be read is one line, exit 2."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from fixtures_util import (
    assert_one_line_error,
    debian_rootfs_tar,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    run_cli,
    source_tar,
)
from test_oracle_reader import read_in_ours, served_by_nydusd, want_from_dir

from nydus_inspect.formats import blob_meta, rafs_v6
from nydus_inspect.layer import open_layer
from oracle import INLINE, fuse_served

SOURCES = ["fixture:dedup.tar", "vector:all-entry-type.tar", "small-files"]

VARIANTS = {
    "batch": ("--batch-size", "0x10000"),
    "batch-lz4-64k-chunks": (
        "--batch-size",
        "0x8000",
        "--chunk-size",
        "0x10000",
        "--compressor",
        "lz4_block",
    ),
    "encrypted": ("--encrypt",),
    "encrypted-batch": ("--encrypt", "--batch-size", "0x10000"),
}


def small_files_tar(path: Path, count: int = 80, seed: int = 7) -> Path:
    """Files of 1 byte to 70 KB, half random and half text: what batches (chunks under half the batch
    size) and encryption's padding (data under 16 bytes) are made of."""
    rng = random.Random(seed)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("a", "a/b"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(info)
        for i in range(count):
            n = rng.choice([1, 5, 15, 16, 17, 100, 700, 3000, 9000, 33000, 70000])
            data = (rng.randbytes(n // 3) + b"line %d\n" % i * n)[:n]
            info = tarfile.TarInfo(f"a/{'b/' if i % 2 else ''}f{i}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000 + i
            tf.addfile(info, io.BytesIO(data))
    return path


def _source(request, source: str, tmp_path: Path) -> Path:
    if source == "small-files":
        return small_files_tar(tmp_path / "small.tar")
    return source_tar(request, source)


def their_layer(oracle, src: Path, work: Path, *opts: str) -> tuple[Path, Path]:
    """`nydus-image create --type tar-rafs` with a bootstrap apart and the blob in a blob directory."""
    blobs = work / "blobs"
    blobs.mkdir(parents=True)
    boot = work / "layer.boot"
    oracle.run(
        "nydus-image", "create", "--log-level", "warn", "--type", "tar-rafs",
        "--bootstrap", boot, "--blob-dir", blobs, *opts, src,
    )  # fmt: skip
    return boot, blobs


def _entry(boot: Path) -> dict:
    proc = run_cli("info", boot, "--json")
    assert proc.returncode == 0, proc.stderr
    (blob,) = json.loads(proc.stdout)["bootstrap"]["blobs"]
    return blob


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("source", SOURCES)
def test_their_variant_reads_as_nydusd_serves_it(request, oracle, fuse_ok, source, variant, tmp_path):
    src = _source(request, source, tmp_path)
    boot, blobs = their_layer(oracle, src, tmp_path / "out", *VARIANTS[variant])
    features = _entry(boot)["features_names"]
    if "batch" in variant:
        assert "batch" in features
    if (source, variant) == ("vector:all-entry-type.tar", "encrypted-batch"):
        # Its one batch holds 15 bytes, which encryption pads to 18 stored: nydus-image writes a batch
        # record nydusd's own check refuses (stored larger than decoded), so nydusd fails the read (EIO)
        # and ours says why in one line.
        with pytest.raises(OSError):
            served_by_nydusd(oracle, boot, blobs, tmp_path)
        proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", tmp_path / "back.tar")
        assert_one_line_error(proc, 2, "batch 0: compressed size 18 and decoded size 15")
        return
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


def test_batches_and_ciphertext_are_really_there(oracle, tmp_path):
    """The layers above are what they claim: batch chunk records in blob.meta, and no file's bytes in clear
    in an encrypted blob."""
    src = small_files_tar(tmp_path / "small.tar")
    boot, blobs = their_layer(oracle, src, tmp_path / "batch", *VARIANTS["batch"])
    proc = run_cli("chunks", boot, "--blob-dir", blobs, "--json")
    assert proc.returncode == 0, proc.stderr
    assert _entry(boot)["features_names"].count("batch") == 1
    boot, blobs = their_layer(oracle, src, tmp_path / "enc", "--encrypt", "--compressor", "none")
    assert _entry(boot)["cipher_algo"] == 1
    (blob,) = blobs.iterdir()
    raw = blob.read_bytes()
    with tarfile.open(src) as tf:
        member = next(m for m in tf if m.isfile() and m.size >= 3000)
        data = tf.extractfile(member).read()
    assert data[-64:] not in raw
    proc = run_cli("cat", boot, "--blob-dir", blobs, "/" + member.name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x10]))


@pytest.mark.parametrize("variant", ["batch", "encrypted", "encrypted-batch"])
def test_verify_and_readers_catch_a_flipped_bit(oracle, variant, tmp_path):
    src = small_files_tar(tmp_path / "small.tar")
    boot, blobs = their_layer(oracle, src, tmp_path / "out", *VARIANTS[variant])
    assert run_cli("verify", boot, "--blob-dir", blobs).returncode == 0
    (blob,) = blobs.iterdir()
    # A byte inside the first chunk's (or batch's) stored data: every chunk is checked, so it is found.
    _flip(blob, 40)
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    assert proc.returncode == 1, proc.stdout.decode() + proc.stderr.decode()
    assert "chunk" in proc.stdout.decode()
    proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", tmp_path / "back.tar")
    assert_one_line_error(proc, 2, "chunk")
    assert not (tmp_path / "back.tar").exists()


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _blob_entry_offset(boot: Path) -> int:
    buf = boot.read_bytes()
    ext = rafs_v6.ExtSuperBlock.parse(buf)
    return ext.s_blob_table_offset


def _field_offset(name: str) -> int:
    fields = rafs_v6.BLOB_ENTRY.fields
    k = [n for n, _ in fields].index(name)
    return struct.calcsize("<" + "".join(fmt for _, fmt in fields[:k]))


def test_an_encrypted_blob_without_its_key_is_one_line(oracle, tmp_path):
    """The key lives in the bootstrap's blob table entry; a bootstrap whose key was wiped lists, but reading
    data says which blob's key is missing."""
    src = small_files_tar(tmp_path / "small.tar")
    boot, blobs = their_layer(oracle, src, tmp_path / "out", "--encrypt")
    at = _blob_entry_offset(boot) + _field_offset("blob_meta_digest")
    _patch(boot, at, bytes(32))
    assert run_cli("ls", boot, "-R", "--blob-dir", blobs).returncode == 0
    proc = run_cli("cat", boot, "--blob-dir", blobs, "/a/f0")
    assert_one_line_error(proc, 2, "is encrypted and its key is missing")
    _patch(boot, _blob_entry_offset(boot) + _field_offset("cipher_algo"), struct.pack("<I", 7))
    proc = run_cli("cat", boot, "--blob-dir", blobs, "/a/f0")
    assert_one_line_error(proc, 2, "cipher")


def _rewrite_blob_meta(boot: Path, blobs: Path, edit) -> None:
    """Store the blob's blob.meta uncompressed after ``edit(bytearray of the decoded area, header)``, and
    point the bootstrap's entry at it: how a batch record that lies is made."""
    (blob,) = blobs.iterdir()
    raw = blob.read_bytes()
    buf = bytearray(boot.read_bytes())
    base = _blob_entry_offset(boot)
    ent = rafs_v6.BlobTableEntry.parse(buf, base)
    hdr = blob_meta.BlobMetaHeader.parse(raw, ent.ci_offset + ent.ci_compressed_size)
    area = bytearray(
        zstandard.ZstdDecompressor().decompress(
            raw[ent.ci_offset : ent.ci_offset + ent.ci_compressed_size],
            max_output_size=ent.ci_uncompressed_size,
        )
    )
    edit(area, hdr)
    hdr.s_ci_compressor = 0
    hdr.s_ci_compressed_size = len(area)
    new = raw[: ent.ci_offset] + bytes(area) + hdr.build()
    blob.write_bytes(new)
    ent.ci_compressor = 0
    ent.ci_compressed_size = len(area)
    ent.compressed_size = len(new)
    buf[base : base + rafs_v6.BLOB_ENTRY.size] = ent.build()
    boot.write_bytes(bytes(buf))


@pytest.mark.parametrize(
    "lie, needle",
    [
        ("batch size", "batch"),
        ("batch index", "batch index"),
        ("batch offset", "batch"),
        ("batch count", "batch records"),
    ],
)
def test_a_batch_record_that_lies_is_one_line(oracle, lie, needle, tmp_path):
    src = small_files_tar(tmp_path / "small.tar")
    boot, blobs = their_layer(
        oracle, src, tmp_path / "out", "--batch-size", "0x10000", "--compressor", "zstd"
    )

    def edit(area: bytearray, hdr) -> None:
        ctx = hdr.s_ci_zran_offset
        if lie == "batch size":
            struct.pack_into("<I", area, ctx + 4, blob_meta.MAX_BATCH + 1)
        elif lie == "batch count":
            hdr.s_ci_zran_count += 1000
        else:
            for i in range(hdr.s_ci_entries):
                info = blob_meta.ChunkInfoArray(bytes(area), hdr.s_ci_entries, True)[i]
                if info.flags & blob_meta.CI_BATCH:
                    data = (1000 << 32) if lie == "batch index" else (info.data & ~0xFFFFFFFF) | 0xFFFFF0
                    struct.pack_into("<Q", area, 24 * i + 16, data)

    _rewrite_blob_meta(boot, blobs, edit)
    proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", tmp_path / "back.tar")
    assert_one_line_error(proc, 2, needle)
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    assert proc.returncode == 1, proc.stdout.decode() + proc.stderr.decode()


def chunk_dict_layer(oracle, tmp_path: Path, src: Path | None = None) -> tuple[Path, Path, Path]:
    """(bootstrap, blob dir, dictionary blob) of a `--chunk-dict` layer: the files of ``src`` (by default the
    small files) and a new one, deduplicated against a dictionary made of ``src``."""
    src = src or small_files_tar(tmp_path / "small.tar")
    dict_boot, blobs = their_layer(oracle, src, tmp_path / "dict")
    (dict_blob,) = blobs.iterdir()
    # The layer: the same files and some new ones, deduplicated against the dictionary.
    layer_src = tmp_path / "layer.tar"
    with tarfile.open(src) as tf, tarfile.open(layer_src, "w", format=tarfile.PAX_FORMAT) as out:
        for m in tf:
            out.addfile(m, tf.extractfile(m) if m.isfile() else None)
        extra = tarfile.TarInfo("a/new")
        data = b"a file the dictionary has not seen\n" * 500
        extra.size = len(data)
        out.addfile(extra, io.BytesIO(data))
    boot = tmp_path / "layer.boot"
    oracle.run(
        "nydus-image", "create", "--log-level", "warn", "--type", "tar-rafs", "--bootstrap", boot,
        "--blob-dir", blobs, "--chunk-dict", f"bootstrap={dict_boot}", layer_src,
    )  # fmt: skip
    return boot, blobs, dict_blob


def test_chunk_dict_layer_reads_with_its_dict_blob_and_names_it_when_missing(
    oracle, fuse_ok, request, tmp_path
):
    """`--chunk-dict`: chunks found in the dictionary stay in the dictionary's blob, which the layer's
    bootstrap lists beside its own; found in the blob dir like any blob; missing, one line names it."""
    boot, blobs, dict_blob = chunk_dict_layer(oracle, tmp_path)
    info = json.loads(run_cli("info", boot, "--json").stdout)["bootstrap"]["blobs"]
    assert len(info) == 2 and dict_blob.name in {b["blob_id"] for b in info}
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in blobs.iterdir():
        if f != dict_blob:
            shutil.copy(f, alone / f.name)
    proc = run_cli("unpack", boot, "--blob-dir", alone, "-o", tmp_path / "x.tar")
    assert_one_line_error(proc, 2, dict_blob.name)


def test_debian_rootfs_as_a_chunk_dict_layer(oracle, fuse_ok, request, tmp_path):
    """The Debian minbase tar and one new file, deduplicated against a dictionary of the Debian tar: nearly
    every chunk lies in the dictionary's blob; nydusd and every reader of ours agree."""
    boot, blobs, dict_blob = chunk_dict_layer(oracle, tmp_path, debian_rootfs_tar())
    with open_layer(str(boot), blob_dir=str(blobs)) as layer:
        dict_index = next(e.blob_index for e in layer.rafs.blobs if e.id == dict_blob.name)
        owners = [c.blob_index for n in layer.rafs.walk() if n.type == "file" for c in layer.rafs.chunks(n)]
    assert owners.count(dict_index) >= len(owners) - 1 > 1000
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


def test_a_flipped_bit_in_the_dict_blob_is_caught(oracle, tmp_path):
    """A chunk the layer keeps in the dictionary's blob, damaged there: verify names it (exit 1) and cat of
    the file holding it is one line, exit 2."""
    boot, blobs, dict_blob = chunk_dict_layer(oracle, tmp_path)
    assert run_cli("verify", boot, "--blob-dir", blobs).returncode == 0
    with open_layer(str(boot), blob_dir=str(blobs)) as layer:
        dict_index = next(e.blob_index for e in layer.rafs.blobs if e.id == dict_blob.name)
        path, chunk = next(
            (os.fsdecode(node.path), c)
            for node in layer.rafs.walk()
            if node.type == "file"
            for c in layer.rafs.chunks(node)
            if c.blob_index == dict_index and c.compressed_size > 1
        )
    _flip(dict_blob, chunk.compressed_offset + chunk.compressed_size // 2)
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert f"chunk {chunk.ci_index} of blob {dict_index}" in out and path in out, out
    assert_one_line_error(run_cli("cat", boot, "--blob-dir", blobs, path), 2, "chunk", dict_blob.name)


def test_debian_rootfs_as_an_encrypted_batch_layer(request, oracle, fuse_ok, tmp_path):
    """One Debian minbase case (CPU is scarce): encrypted and batched at once."""
    src = debian_rootfs_tar()
    boot, blobs = their_layer(oracle, src, tmp_path / "out", *VARIANTS["encrypted-batch"])
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


@contextlib.contextmanager
def erofsfuse_with_device(erofs_utils, boot: Path, device: Path, mnt: Path):
    """``erofsfuse --device=TAR BOOT MNT``: erofs-utils serving a tarfs bootstrap over its tar (nydusd
    serves tarfs only through the kernel's EROFS, not FUSE), taken down on exit."""
    mnt.mkdir(parents=True, exist_ok=True)
    log = mnt.parent / "erofsfuse.log"
    with open(log, "wb") as out:
        argv = [str(erofs_utils.bin / "erofsfuse"), f"--device={device}", str(boot), str(mnt)]
        proc = subprocess.Popen(argv, stdout=out, stderr=out)

    def failed() -> str:
        return (
            f"erofsfuse did not mount {boot} (exit {proc.poll()}): {log.read_text(errors='replace')[-2000:]}"
        )

    with fuse_served(proc, mnt, 30, failed, daemonizes=True) as served:
        yield served


def _their_tarfs_read_in_ours(request, oracle, erofs_utils, src: Path, work: Path, *, copy: bool):
    """nydus-image's tarfs layer of ``src`` (the tar as its blob, in a blob dir under its sha256: a copy, or a
    link), served by erofsfuse with the tar as its extra device and read by every reader of ours against
    that; (bootstrap, blob, blob-table entry, what erofsfuse served)."""
    blobs = work / "blobs"
    blobs.mkdir()
    boot = work / "layer.boot"
    oracle.run(
        "nydus-image", "create", "--log-level", "warn", "--type", "tar-tarfs", "--bootstrap", boot,
        "--blob-dir", blobs, src,
    )  # fmt: skip
    ent = _entry(boot)
    assert "tarfs" in ent["features_names"]
    blob = blobs / ent["blob_id"]
    blob.unlink(missing_ok=True)
    if copy:
        shutil.copy(src, blob)
    else:
        blob.symlink_to(src)
    started = int(time.time())
    with erofsfuse_with_device(erofs_utils, boot, blob, work / "erofsfuse") as mnt:
        want = want_from_dir(mnt, (started, int(time.time()) + 1))
    assert want.keys() - {b"/"} == expected_tree(src).keys() - {b"/"}
    read_in_ours(request, boot, want, work, "--blob-dir", blobs)
    return boot, blob, ent, want


@pytest.mark.parametrize("source", ["fixture:dedup.tar", "vector:all-entry-type.tar", "small-files"])
def test_their_tarfs_layer_reads_as_erofs_utils_serves_it(
    request, oracle, erofs_utils, fuse_ok, source, tmp_path
):
    """`--type tar-tarfs`: 512-byte blocks, and the blob is the tar itself (named by its sha256, as the
    snapshotter keeps it). erofsfuse serves it with the tar as its extra device; ours (ls, cat of every
    file, verify, unpack, our mount) gives the same tree and bytes. verify checks the tar by its blob id:
    a flipped bit is found; without the tar one line names the blob to give."""
    src = _source(request, source, tmp_path)
    boot, blob, ent, want = _their_tarfs_read_in_ours(request, oracle, erofs_utils, src, tmp_path, copy=True)
    blobs = blob.parent
    info = json.loads(run_cli("info", boot, "--json").stdout)
    assert info["bootstrap"]["superblock"]["block_size"] == 512
    _flip(blob, os.path.getsize(blob) // 2)
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    assert proc.returncode == 1 and "blob.id" in proc.stdout.decode(), proc.stdout.decode()
    # Its chunks record no digest: the readers hold the tar to its id before returning any of its bytes.
    some = next(os.fsdecode(p) for p, w in want.items() if w.type == "file" and w.size)
    assert_one_line_error(run_cli("cat", boot, "--blob-dir", blobs, some), 2, "is not its id")
    blob.unlink()
    assert_one_line_error(run_cli("cat", boot, "--blob-dir", blobs, some), 2, ent["blob_id"])


def test_debian_rootfs_as_a_tarfs_layer(request, oracle, erofs_utils, fuse_ok, tmp_path):
    """The Debian minbase tar as a tarfs layer: erofsfuse serves it over the tar, and ours (describe,
    verify, unpack, ls, our mount) gives the same tree and bytes."""
    # The tar is the blob: linked under its sha256, not copied (120 MB).
    _their_tarfs_read_in_ours(request, oracle, erofs_utils, debian_rootfs_tar(), tmp_path, copy=False)


def test_merging_tarfs_layers_is_refused_in_one_line(oracle, tmp_path):
    """A tarfs bootstrap counts 512-byte blocks that are the tar's own; our merge writes 4K blocks and
    would lose both (nydus-image merge writes a tarfs bootstrap): it says so and writes nothing."""
    boots = []
    for i in range(2):
        src = small_files_tar(tmp_path / f"l{i}.tar", count=4, seed=i)
        boot = tmp_path / f"l{i}.boot"
        oracle.run(
            "nydus-image", "create", "--log-level", "warn", "--type", "tar-tarfs", "--bootstrap", boot,
            "--blob-dir", tmp_path, src,
        )  # fmt: skip
        boots.append(boot)
    out = tmp_path / "merged.boot"
    assert_one_line_error(run_cli("merge", "-o", out, *boots), 2, "tarfs layer")
    assert not out.exists()


@pytest.mark.parametrize("variant", ["batch", "encrypted", "encrypted-batch"])
@pytest.mark.parametrize("source", ["small-files", "fixture:dedup.tar"])
def test_their_inline_variant_layer(request, oracle, fuse_ok, source, variant, tmp_path):
    """Batch and encrypted layers as the snapshotter makes them (`--blob-inline-meta --features blob-toc`):
    blob.meta and its batch records come from the ToC (decrypted with the bootstrap's key: the ToC records
    the plaintext's sha256); the layer blob opens on its own."""
    src = _source(request, source, tmp_path)
    _, blob = oracle.create(src, tmp_path / "out", *INLINE, *VARIANTS[variant])
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / digest)
    boot = tmp_path / digest
    oracle.run("nydus-converter", "entry", blob, "image.boot", boot)
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, blob, want, tmp_path)
    bad = tmp_path / "bad.blob"
    shutil.copy(blob, bad)
    _flip(bad, 100)
    proc = run_cli("verify", bad)
    assert proc.returncode == 1 and "chunk" in proc.stdout.decode(), proc.stdout.decode()


def test_blob_meta_in_the_clear_is_read_without_the_bootstrap(vectors):
    """Whether a blob.meta needs decrypting is told by its header's magic: a layer's blob.meta header reads
    without decoding its bootstrap (tens of MB at a million inodes, and what the TUI's first frame shows)."""
    from conftest import TOC_BLOB

    from nydus_inspect.layer import open_layer

    with open_layer(str(vectors / TOC_BLOB)) as layer:
        assert layer.blob_meta_header.s_ci_entries > 0
        assert layer.chunk_infos is not None
        assert "rafs" not in layer.__dict__
