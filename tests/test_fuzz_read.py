"""Fuzz every reader with mutated copies of the real vectors.

Each copy of a vector gets 1-4 mutations (bit flips, truncations, overwrites of 1/2/4/8 bytes with 0, all-ones,
random or boundary values, octal tar sizes), aimed mostly at the structure areas: the last KiB of a blob, the
first 8 KiB of a bootstrap, and the fields our own parsers locate in the unmutated vector. Half of the blob copies
are then *resealed* (tar checksums and ToC sha256 recomputed) so that mutations get past the integrity checks into
the parsers behind them; half of the tar.gz copies are mutated inside the gzip stream and recompressed.

Every copy goes through :func:`exercise` (open, info, toc report, every entry, chunks report, recursive listing
with chunks, cat of every file; every other copy also through the CLI in-process). Each must end in success or
FormatError / UsageError (CLI: exit 0 or 2) within 1 s. The acceptance criterion is 10,000 copies per vector:
``NYDUS_FUZZ_ITERS=10000 python -m pytest -n 2 tests/test_fuzz_read.py``. Seeds are fixed per shard
(``NYDUS_FUZZ_SEED`` shifts them all); a failure names vector, seed, copy and mutations, keeps the copy, and
:func:`reproduce` replays it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import signal
import struct
import sys
import tarfile
import threading
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import BOOTSTRAP, DATA_BLOB, TOC_BLOB, V5_BOOTSTRAP, VECTORS

import nydus_inspect
from nydus_inspect import FormatError, UsageError, cli, query
from nydus_inspect.formats import blob_meta, rafs_v5, rafs_v6, tar_header, toc
from nydus_inspect.formats._struct import Layout, round_up
from nydus_inspect.model import DIR, REG, RafsV6, fsdecode

pytestmark = [pytest.mark.vectors, pytest.mark.slow]

#: Mutated copies per vector (split over SHARDS tests). The acceptance run uses 10000.
ITERS = int(os.environ.get("NYDUS_FUZZ_ITERS", "3000"))
SHARDS = 4
SEED = int(os.environ.get("NYDUS_FUZZ_SEED", "0"))
#: CPU seconds a copy may take (the process's, every thread's): a parser that loops or allocates without
#: bound spends CPU, and CPU time does not grow when other jobs share the machine, as wall time does.
TIME_LIMIT = 1.0
#: Wall seconds after which a copy is interrupted: a copy that blocks (waits on a pipe, sleeps) spends none.
HANG_LIMIT = 10.0
#: One copy in CLI_EVERY also goes through the command line (in-process).
CLI_EVERY = 2

INVALID_BOOT_LAYER = "snapshotter/invalid-bootstrap-file-size-133513.tar.gz"
INVALID_LAYER = "snapshotter/invalid.tar.gz"


class FuzzTimeout(BaseException):
    """Raised by SIGALRM when one copy runs over the time limit (a BaseException: nothing may swallow it)."""


# ============================================================================ vectors and their structure
@dataclass(frozen=True)
class Vector:
    name: str
    kind: str  # "blob", "bootstrap", "targz"
    file_name: str  # name of the mutated copy (blob lookups go by name)
    hot: str  # "tail": last KiB, "head": first 8 KiB, "all"


VECTOR_LIST = [
    Vector("toc-blob", "blob", os.path.basename(TOC_BLOB), "tail"),
    Vector("data-blob", "blob", os.path.basename(DATA_BLOB), "tail"),
    # Derived from a real vector: the 2fa78 blob without its ToC, read by the tar-header walk alone.
    Vector("toc-blob-without-toc", "blob", os.path.basename(TOC_BLOB), "tail"),
    Vector("v6-bootstrap", "bootstrap", "rafs-v6-2.2.boot", "head"),
    Vector("inline-bootstrap", "bootstrap", "image.boot", "head"),
    Vector("v5-bootstrap", "bootstrap", "sha256-nocompress-repeatable", "head"),
    # Not a real vector: the bootstrap of test_erofs_read with every inode kind the real ones lack
    # (symlinks, devices, xattrs, compact inodes, multi-block directories), checked there by erofs-utils.
    Vector("synthetic-bootstrap", "bootstrap", "synthetic.boot", "head"),
    Vector("invalid-bootstrap-targz", "targz", os.path.basename(INVALID_BOOT_LAYER), "all"),
    Vector("invalid-targz", "targz", os.path.basename(INVALID_LAYER), "all"),
]
VECTORS_BY_NAME = {v.name: v for v in VECTOR_LIST}


@cache
def original(name: str) -> bytes:
    rel = {
        "toc-blob": TOC_BLOB,
        "data-blob": DATA_BLOB,
        "v6-bootstrap": BOOTSTRAP,
        "v5-bootstrap": V5_BOOTSTRAP,
        "invalid-bootstrap-targz": INVALID_BOOT_LAYER,
        "invalid-targz": INVALID_LAYER,
    }.get(name)
    if rel is not None:
        return (VECTORS / rel).read_bytes()
    if name == "toc-blob-without-toc":
        return (VECTORS / TOC_BLOB).read_bytes()[:-1024]  # drop rafs.blob.toc and its tar header
    if name == "synthetic-bootstrap":
        from test_erofs_read import _specs, build_bootstrap

        return build_bootstrap(_specs(entries=24, name_len=200))[0]  # still 2 directory blocks, fewer files
    with nydus_inspect.open_layer(str(VECTORS / TOC_BLOB)) as layer:  # inline-bootstrap
        return layer.entry("image.boot")


def _layout_fields(layout: Layout, base: int) -> list[tuple[int, int]]:
    out = []
    for name, fmt in layout.fields:
        if fmt.endswith("x"):
            continue
        width = struct.calcsize("<" + fmt)
        out.append((base + layout.offsets[name], min(width, 8)))
    return out


def _blob_structure(raw: bytes) -> tuple[list[tuple[int, int]], list[int]]:
    """Fields (offset, width) of the ToC, the blob.meta header and the chunk-info array; tar header offsets."""
    layer_headers, fields = [], []
    cur = len(raw) - 512
    while cur >= 0:
        hdr = tar_header.parse(raw[cur : cur + 512], cur)
        layer_headers.append(cur)
        if hdr.name == "rafs.blob.toc":
            for slot in range(cur - hdr.size, cur, 128):
                fields += _layout_fields(toc.ENTRY, slot)
        if hdr.name == "blob.meta":
            base = cur - blob_meta.HEADER_SIZE
            fields += _layout_fields(blob_meta.HEADER, base)
            head = blob_meta.BlobMetaHeader.parse(raw, base)
            fields += [(head.s_ci_offset + 8 * k, 8) for k in range(head.s_ci_compressed_size // 8)]
        cur -= hdr.size + 512
    return fields, layer_headers


def _v6_structure(raw: bytes) -> list[tuple[int, int]]:
    r = RafsV6(raw)
    fields = _layout_fields(rafs_v6.SUPERBLOCK, 1024) + _layout_fields(rafs_v6.EXT_SUPERBLOCK, 1152)
    for i in range(len(r.blobs)):
        fields += _layout_fields(rafs_v6.DEVICE, rafs_v6.DEVICE_TABLE_OFFSET + 128 * i)
        fields += _layout_fields(rafs_v6.BLOB_ENTRY, r.ext.s_blob_table_offset + 256 * i)
    for i in range(r.ext.s_chunk_table_size // 80):
        fields += _layout_fields(rafs_v6.CHUNK_TABLE_ENTRY, r.ext.s_chunk_table_offset + 80 * i)
    for node in r.walk():
        off = r.inode_offset(node.nid)
        ino = r.inode(node.nid)
        fields += _layout_fields(rafs_v6.INODE_EXTENDED if ino.extended else rafs_v6.INODE_COMPACT, off)
        body = off + ino.inode_size + ino.xattr_size
        if node.type == DIR:
            full = ino.i_size // 4096 * 4096
            bases = [ino.i_u * 4096 + b for b in range(0, full, 4096)]
            if ino.i_size > full:
                bases.append(body if ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE else ino.i_u * 4096 + full)
            for base in bases:
                count = struct.unpack_from("<H", raw, base + 8)[0] // 12
                for k in range(count):
                    fields += [(base + 12 * k, 8), (base + 12 * k + 8, 2), (base + 12 * k + 10, 1)]
        elif node.type == REG:
            start = round_up(body, 8)
            for k in range(-(-ino.i_size // r.chunk_size)):
                fields += [(start + 8 * k, 2), (start + 8 * k + 2, 2), (start + 8 * k + 4, 4)]
    return fields


def _v5_structure(raw: bytes) -> list[tuple[int, int]]:
    r = rafs_v5.RafsV5(raw)
    sb = r.sb
    fields = _layout_fields(rafs_v5.SUPERBLOCK, 0)
    fields += [(sb.s_inode_table_offset + 4 * i, 4) for i in range(sb.s_inode_table_entries)]
    fields += [(sb.s_blob_table_offset + k, 8) for k in range(0, sb.s_blob_table_size, 8)]
    for entry in r.table:
        if entry:
            fields += _layout_fields(rafs_v5.INODE, entry << 3)
    return fields


def _tar_members(tar: bytes) -> list[tuple[int, int]]:
    """(header offset, data size) of each member of an uncompressed tar."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for m in tf:
            out.append((m.offset, m.size))
    return out


@dataclass
class Structure:
    fields: list[tuple[int, int]]
    headers: list[int]  # tar header offsets (blob sections, or tar members inside a tar.gz)
    inner: bytes = b""  # the uncompressed tar of a tar.gz
    inner_fields: list[tuple[int, int]] | None = None


@cache
def structure(name: str) -> Structure:
    raw = original(name)
    vec = VECTORS_BY_NAME[name]
    if vec.kind == "blob":
        fields, headers = _blob_structure(raw)
        return Structure(fields, headers)
    if name == "v5-bootstrap":
        return Structure(_v5_structure(raw), [])
    if vec.kind == "bootstrap":
        return Structure(_v6_structure(raw), [])
    inner = gzip.decompress(raw)
    members = _tar_members(inner)
    inner_fields = []
    for off, size in members:
        inner_fields += [(off + 124, 12), (off + 148, 8), (off + 156, 1), (off + 0, 8)]
        data = off + 512
        inner_fields += [(data + k, 8) for k in range(0, min(size, 8192), 8)]
    return Structure([], [off for off, _ in members], inner, inner_fields)


# ============================================================================ mutations
def _value(rng: random.Random, width: int, old: int) -> int:
    top = (1 << (8 * width)) - 1
    return rng.choice(
        [
            0,
            top,
            rng.getrandbits(8 * width),
            rng.randrange(256),
            1 << (8 * width - 1),
            (old + rng.choice([-1, 1])) & top,
            rng.getrandbits(8 * width) >> rng.randrange(8 * width),
        ]
    )


def _offset(
    rng: random.Random, size: int, hot: tuple[int, int], fields: list[tuple[int, int]]
) -> tuple[int, int]:
    """A (offset, width) pair: a known field, a spot in the hot area, or anywhere."""
    r = rng.random()
    if fields and r < 0.45:
        off, width = rng.choice(fields)
        if rng.random() < 0.25:
            width = rng.choice([1, 2, 4, 8])
        return off, width
    width = rng.choice([1, 2, 4, 8])
    lo, hi = hot if r < 0.85 else (0, size)
    off = rng.randrange(max(lo, 0), max(min(hi, size), lo + 1))
    if rng.random() < 0.5:
        off -= off % width
    return off, width


def mutate(data: bytes, rng: random.Random, hot: tuple[int, int], fields, headers) -> tuple[bytes, list[str]]:
    buf = bytearray(data)
    notes = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        if not buf:
            break
        op = rng.random()
        if op < 0.30:
            off, _ = _offset(rng, len(buf), hot, fields)
            off = min(off, len(buf) - 1)
            bit = rng.randrange(8)
            buf[off] ^= 1 << bit
            notes.append(f"flip bit {bit} at {off}")
        elif op < 0.40:
            if rng.random() < 0.5:
                cut = rng.randrange(max(hot[0], 0), max(min(hot[1], len(buf)), hot[0] + 1))
            else:
                cut = rng.randrange(len(buf))
            del buf[cut:]
            notes.append(f"truncate to {cut}")
        elif op < 0.48 and headers:
            hdr = rng.choice(headers)
            if hdr + 512 > len(buf):
                continue
            value = rng.choice(
                [0, 1, rng.randrange(1 << 20), rng.randrange(1 << 33), hdr, hdr + 512, len(buf)]
            )
            buf[hdr + 124 : hdr + 136] = format(value, "o").rjust(11, "0").encode()[-11:] + b"\0"
            _fix_checksum(buf, hdr)
            notes.append(f"tar size at {hdr + 124} = {value} (checksum fixed)")
        else:
            off, width = _offset(rng, len(buf), hot, fields)
            if off + width > len(buf):
                continue
            old = int.from_bytes(buf[off : off + width], "little")
            value = _value(rng, width, old)
            buf[off : off + width] = value.to_bytes(width, "little")
            notes.append(f"u{8 * width} at {off} = {value:#x}")
    return bytes(buf), notes


def _fix_checksum(buf: bytearray, hdr: int) -> None:
    block = buf[hdr : hdr + 512]
    block[148:156] = b" " * 8
    buf[hdr + 148 : hdr + 156] = b"%07o\0" % sum(block)


def reseal_blob(buf: bytearray, headers: list[int]) -> None:
    """Make a mutated blob consistent again: tar header checksums, then the ToC's sha256 of each entry."""
    for hdr in headers:
        if hdr + 512 <= len(buf) and any(buf[hdr : hdr + 512]):
            _fix_checksum(buf, hdr)
    if len(buf) < 512:
        return
    tail = len(buf) - 512
    try:
        hdr = tar_header.parse(bytes(buf[tail:]), tail)
    except FormatError:
        return
    if hdr.name != "rafs.blob.toc" or hdr.size > tail or hdr.size % 128:
        return
    for slot in range(tail - hdr.size, tail, 128):
        flags, name, off, csize, usize = struct.unpack_from("<I4x16s32xQQQ", buf, slot)
        if name.rstrip(b"\0") == b"image.blob":
            off, extra = 0, 512
        else:
            extra = 0
        if off + csize + extra > len(buf) or csize > 1 << 24:
            continue
        data = bytes(buf[off : off + csize + extra])
        if flags & 0xF == 2:
            try:
                import zstandard

                data = zstandard.ZstdDecompressor().decompress(data, max_output_size=min(usize, 1 << 24))
            except Exception:  # noqa: BLE001 - unreadable data keeps its old digest
                continue
        buf[slot + 24 : slot + 56] = hashlib.sha256(data).digest()


def make_copy(vec: Vector, seed: int, index: int) -> tuple[bytes, list[str]]:
    """The index-th mutated copy of a vector for a shard seed (deterministic)."""
    rng = random.Random(f"{seed}/{index}")
    raw = original(vec.name)
    st = structure(vec.name)
    if vec.kind == "targz" and rng.random() < 0.5:
        inner = st.inner
        hot = (0, min(len(inner), 16384))
        data, notes = mutate(inner, rng, hot, st.inner_fields, st.headers)
        if rng.random() < 0.7:
            buf = bytearray(data)
            for hdr in st.headers:
                if hdr + 512 <= len(buf) and any(buf[hdr : hdr + 512]):
                    _fix_checksum(buf, hdr)
            data = bytes(buf)
            notes.append("tar checksums fixed")
        return gzip.compress(data, compresslevel=1, mtime=0), ["inside gzip: " + "; ".join(notes)]
    size = len(raw)
    hot = {"tail": (size - 1024, size), "head": (0, 8192), "all": (0, size)}[vec.hot]
    data, notes = mutate(raw, rng, hot, st.fields, st.headers)
    if vec.kind == "blob" and rng.random() < 0.5:
        buf = bytearray(data)
        reseal_blob(buf, st.headers)
        data = bytes(buf)
        notes.append("resealed")
    return data, notes


# ============================================================================ exercising a copy
ALLOWED = (FormatError, UsageError)


class Outcome(Counter):
    def step(self, label: str, fn):
        try:
            result = fn()
        except ALLOWED:
            self[label + ":error"] += 1
            return None
        self[label + ":ok"] += 1
        return result


def _open_kwargs(vec: Vector, copy: Path) -> dict:
    if vec.name == "v6-bootstrap":
        return {"blob_dir": str(VECTORS / "nydus/blobs")}
    if vec.name == "inline-bootstrap":
        return {"blobs": [str(VECTORS / TOC_BLOB)]}
    return {}


def exercise_layer(layer, out: Outcome, prefix: str = "") -> list[str]:
    """Run every reading operation on an opened layer; returns the paths of its regular files."""
    out.step(prefix + "info", lambda: query.info(layer))
    out.step(prefix + "toc", lambda: query.toc_report(layer))
    out.step(prefix + "digest", lambda: (layer.toc_digest, layer.digest))
    names = out.step(prefix + "names", layer.entry_names) or []
    for name in names:
        out.step(prefix + "entry", lambda name=name: layer.entry(name))
        out.step(prefix + "entry-unverified", lambda name=name: layer.entry(name, verify=False))
        out.step(prefix + "entry-stream", lambda name=name: b"".join(layer.iter_entry(name)))
        out.step(prefix + "entry-raw", lambda name=name: layer.entry_raw(name))
    out.step(prefix + "chunks", lambda: list(query.chunks_report(layer)))
    out.step(prefix + "blob-ids", lambda: [layer.blob_id(i) for i in range(len(layer.rafs.blobs))])
    out.step(prefix + "ls", lambda: list(query.list_nodes(layer, "/")))
    nodes = out.step(
        prefix + "ls-R", lambda: list(query.list_nodes(layer, "/", recursive=True, with_chunks=True))
    )
    files = []
    for node in nodes or ():
        out.step(prefix + "json", lambda node=node: node.to_json(with_chunks=True))
        if node.type == REG:
            path = fsdecode(node.path)
            files.append(path)
            out.step(prefix + "cat", lambda path=path: b"".join(query.cat(layer, path)))
    return files


def exercise(vec: Vector, copy: Path) -> tuple[Outcome, list[str]]:
    out = Outcome()
    files: list[str] = []
    layer = out.step("open", lambda: nydus_inspect.open_layer(str(copy), **_open_kwargs(vec, copy)))
    if layer is not None:
        with layer:
            files = exercise_layer(layer, out)
    if vec.name == "data-blob":
        # The mutated data blob as the blob of the real bootstrap: every chunk read goes through it.
        boot = out.step(
            "open-boot", lambda: nydus_inspect.open_layer(str(VECTORS / BOOTSTRAP), blob_dir=str(copy.parent))
        )
        if boot is not None:
            with boot:
                for path in ("/lib.rs", "/sync_io.rs"):
                    out.step("cat-through-boot", lambda path=path: b"".join(query.cat(boot, path)))
                out.step("chunk-infos", lambda: list(boot.blob_file(0).layer.chunk_infos or ()))
    return out, files


@cache
def _full_parser():
    return _build_parser()


def _parser(argv=None):
    return _full_parser()


_build_parser = cli.build_parser


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``cli.main(argv)`` in-process (with one argparse parser for all runs: building it costs more than a run)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stderr = io.StringIO()
    term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    cli.build_parser = _parser
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(argv)
    finally:
        cli.build_parser = _build_parser
        if term is not None:
            signal.signal(signal.SIGTERM, term)
    return code, stderr.getvalue()


def exercise_cli(vec: Vector, copy: Path, files: list[str]) -> list[str]:
    """The CLI on the copy: exit 0 or 2 only, and an error is one line. Returns problems found."""
    extra = []
    if vec.name == "v6-bootstrap":
        extra = ["--blob-dir", str(VECTORS / "nydus/blobs")]
    elif vec.name == "inline-bootstrap":
        extra = ["--blob", str(VECTORS / TOC_BLOB)]
    commands = [
        ["info"],
        ["info", "--json"],
        ["toc"],
        ["toc", "--json"],
        ["chunks"],
        ["chunks", "--json"],
        ["ls", "-lR", "--chunks"],
        ["ls", "-R", "--json", "--chunks"],
        ["entry", str(copy), "image.boot"],
    ]
    problems = []
    for cmd in commands:
        argv = [cmd[0], str(copy), *extra, *cmd[1:]] if cmd[0] != "entry" else [*cmd, *extra]
        code, err = run_cli(argv)
        if code not in (0, 2) or (code == 2 and err.count("\n") != 1) or "internal error" in err:
            problems.append(f"nydus-inspect {' '.join(argv)} -> exit {code}: {err.strip()}")
    for path in files[:4]:
        code, err = run_cli(["cat", str(copy), path, *extra])
        if code not in (0, 2) or "internal error" in err:
            problems.append(f"nydus-inspect cat {copy} {path} -> exit {code}: {err.strip()}")
    return problems


def check_copy(vec: Vector, copy: Path, data: bytes, with_cli: bool) -> tuple[Outcome | None, str | None]:
    """Write ``data`` to ``copy`` and exercise it; returns (outcome, problem or None)."""
    tmp = copy.with_name(copy.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, copy)  # a new inode: mappings of the previous copy stay valid until closed
    use_alarm = threading.current_thread() is threading.main_thread()
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT)
    start = time.process_time()
    try:
        out, files = exercise(vec, copy)
        if with_cli:
            problems = exercise_cli(vec, copy, files)
            if problems:
                return out, "CLI: " + " | ".join(problems)
    except FuzzTimeout:
        return None, f"took more than {HANG_LIMIT} s (interrupted)"
    except Exception:  # noqa: BLE001 - exactly what this test hunts
        return None, "raised " + traceback.format_exc(limit=-6)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.process_time() - start
    if elapsed > TIME_LIMIT:
        return out, f"took {elapsed:.2f} s of CPU (limit {TIME_LIMIT} s)"
    return out, None


def _on_alarm(signum, frame):
    raise FuzzTimeout


def shard_seed(vec: Vector, shard: int) -> int:
    return zlib.crc32(f"{vec.name}/{shard}".encode()) + SEED


def reproduce(name: str, seed: int, index: int, where: str = "/tmp") -> str:
    """Replay one copy, from the repository root::

    python -c "import sys; sys.path[:0] = ['.', 'tests']; import test_fuzz_read as f; print(f.reproduce('toc-blob', S, I))"
    """
    vec = VECTORS_BY_NAME[name]
    data, notes = make_copy(vec, seed, index)
    copy = Path(where) / vec.file_name
    out, problem = check_copy(vec, copy, data, with_cli=True)
    return f"{copy}: {'; '.join(notes)} -> {problem or 'ok'}"


# ============================================================================ the tests
SHARD_PARAMS = [pytest.param(v, s, id=f"{v.name}-{s}") for v in VECTOR_LIST for s in range(SHARDS)]

#: A step that must succeed on some copies, showing the mutations reach past the first checks.
DEEP_STEP = {
    "toc-blob": "cat:ok",
    "data-blob": "cat-through-boot:ok",
    "toc-blob-without-toc": "cat:ok",
    "v6-bootstrap": "cat:ok",
    "inline-bootstrap": "cat:ok",
    "v5-bootstrap": "ls-R:ok",
    "synthetic-bootstrap": "ls-R:ok",
    "invalid-bootstrap-targz": "open:ok",
    "invalid-targz": "open:ok",
}


#: What fails, as it should, on the unmutated vectors.
EXPECTED_ERRORS = {
    "toc-blob": set(),
    "data-blob": {"blob-ids", "ls", "ls-R"},  # a data blob has no bootstrap
    "toc-blob-without-toc": set(),
    "v6-bootstrap": {"toc"},  # a bootstrap has no ToC
    "inline-bootstrap": {"toc"},
    "v5-bootstrap": {
        "toc",
        "cat",
    },  # no ToC, and its data blob is not a vector (its chunks list from the inodes)
    "synthetic-bootstrap": {"toc", "cat"},  # its blob is a bare device, not a nydus blob
    "invalid-bootstrap-targz": {"toc", "info", "chunks", "blob-ids", "ls", "ls-R"},
    "invalid-targz": {"toc", "info", "chunks", "blob-ids", "ls", "ls-R"},
}


@pytest.mark.parametrize(("vec", "shard"), SHARD_PARAMS)
def test_fuzz(vectors, tmp_path, vec: Vector, shard: int):
    count = ITERS // SHARDS + (1 if shard < ITERS % SHARDS else 0)
    seed = shard_seed(vec, shard)
    copy = tmp_path / vec.file_name
    _parser()  # imports and argparse set-up happen once, outside the timed copies
    totals = Counter()
    started = time.perf_counter()
    for index in range(count):
        data, notes = make_copy(vec, seed, index)
        out, problem = check_copy(vec, copy, data, with_cli=index % CLI_EVERY == 0)
        if problem:
            keep = tmp_path / f"failing-{vec.name}-{seed}-{index}"
            keep.write_bytes(data)
            pytest.fail(
                f"{vec.name} shard {shard} seed {seed} copy {index}: {'; '.join(notes)}\n"
                f"kept at {keep}; replay: python -c \"import sys; sys.path[:0] = ['.', 'tests']; "
                f'import test_fuzz_read as f; print(f.reproduce({vec.name!r}, {seed}, {index}))"\n{problem}',
                pytrace=False,
            )
        totals.update(out or {})
    elapsed = time.perf_counter() - started
    print(f"{vec.name} shard {shard}: {count} copies in {elapsed:.1f} s; {dict(sorted(totals.items()))}")
    if count >= 50:
        assert totals[DEEP_STEP[vec.name]] > 0, f"no copy reached {DEEP_STEP[vec.name]}: {dict(totals)}"


# ---------------------------------------------------------------------------- the harness itself
def test_copies_are_deterministic(vectors):
    vec = VECTORS_BY_NAME["toc-blob"]
    assert make_copy(vec, 7, 3) == make_copy(vec, 7, 3)
    assert (
        make_copy(vec, 7, 3)[0] != make_copy(vec, 7, 4)[0]
        or make_copy(vec, 7, 3)[1] != make_copy(vec, 7, 4)[1]
    )


@pytest.mark.parametrize("name", ["toc-blob", "data-blob"])
def test_reseal_keeps_an_intact_blob_intact(vectors, name):
    raw = original(name)
    buf = bytearray(raw)
    reseal_blob(buf, structure(name).headers)
    assert bytes(buf) == raw


@pytest.mark.parametrize("vec", VECTOR_LIST, ids=[v.name for v in VECTOR_LIST])
def test_unmutated_vectors_pass_the_harness(vectors, tmp_path, vec):
    out, problem = check_copy(vec, tmp_path / vec.file_name, original(vec.name), with_cli=True)
    assert problem is None
    assert out[DEEP_STEP[vec.name]] > 0
    errors = {k.rsplit(":", 1)[0] for k in out if k.endswith(":error")}
    assert errors == EXPECTED_ERRORS[vec.name], out


def test_harness_reports_other_exceptions_and_hangs(vectors, tmp_path, monkeypatch):
    vec = VECTORS_BY_NAME["toc-blob"]
    raw = original(vec.name)

    def broken(layer):
        raise KeyError("bug")

    monkeypatch.setattr(query, "info", broken)
    _, problem = check_copy(vec, tmp_path / vec.file_name, raw, with_cli=False)
    assert problem and "KeyError" in problem

    def busy(layer):
        start = time.process_time()
        while time.process_time() - start < TIME_LIMIT + 0.2:
            pass

    monkeypatch.setattr(query, "info", busy)
    _, problem = check_copy(vec, tmp_path / vec.file_name, raw, with_cli=False)
    assert problem and "of CPU" in problem

    def blocked(layer):
        time.sleep(1.0)

    monkeypatch.setattr(sys.modules[__name__], "HANG_LIMIT", 0.3)
    monkeypatch.setattr(query, "info", blocked)
    _, problem = check_copy(vec, tmp_path / vec.file_name, raw, with_cli=False)
    assert problem and "interrupted" in problem

    monkeypatch.undo()
    monkeypatch.setattr(cli, "print_kv", broken)  # a bug only the CLI meets: exit 3, "internal error"
    _, problem = check_copy(vec, tmp_path / vec.file_name, raw, with_cli=True)
    assert problem and problem.startswith("CLI: ") and "exit 3" in problem and "KeyError" in problem


def test_structure_maps_fields(vectors):
    assert len(structure("v6-bootstrap").fields) > 100
    assert len(structure("v5-bootstrap").fields) > 100
    assert len(structure("toc-blob").headers) == 4
    assert structure("invalid-bootstrap-targz").headers


# ---------------------------------------------------------------------------- regressions the fuzzer found
def _tar_with_forged_size(size_field: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in ("README", "image/image.boot"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    raw = bytearray(buf.getvalue())
    raw[124:136] = size_field
    _fix_checksum(raw, 0)
    return bytes(raw)


@pytest.mark.parametrize(
    "size_field",
    [b"\x80" + (1 << 80).to_bytes(11, "big"), b"\x80" + (1 << 40).to_bytes(11, "big"), b"77777777777\0"],
    ids=["base256-2^80", "base256-1TiB", "octal-8GiB"],
)
@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
def test_bootstrap_layer_with_a_forged_member_size_fails_fast(tmp_path, size_field, gz):
    # tarfile's stream mode skipped a member by reading size/10240 blocks even past the end of the data:
    # seconds for an 8 GiB octal size, for ever for a base-256 one.
    data = _tar_with_forged_size(size_field)
    path = tmp_path / ("layer.tar.gz" if gz else "layer.tar")
    path.write_bytes(gzip.compress(data) if gz else data)
    start = time.process_time()
    with nydus_inspect.open_layer(str(path)) as layer:
        with pytest.raises(FormatError, match="bootstrap layer"):
            layer.bootstrap_bytes()
    assert time.process_time() - start < TIME_LIMIT
