"""Compressed tar inputs are checked as they are read: each gzip member's CRC32 and ISIZE, each zstd frame's
content checksum (when it has one), and the framing up to the end of the input, which lies past the tar's
end-of-archive blocks."""

from __future__ import annotations

import io

import hostile
import pytest
from fixtures_util import assert_one_line_error, run_cli

from nydus_inspect import decompress
from nydus_inspect.errors import FormatError, NydusInspectError
from nydus_inspect.pack import PackOptions, pack


def _pack(src, out) -> str | None:
    """The layer's digest, or None when pack refused the input (as a NydusInspectError, nothing else)."""
    try:
        return pack(str(src), str(out), PackOptions(chunk_size=0x1000, workers=1)).digest
    except NydusInspectError:
        return None


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    d = tmp_path_factory.mktemp("intact")
    plain = hostile.small_tar()
    (d / "a.tar").write_bytes(plain)
    return _pack(d / "a.tar", d / "a.blob")


@pytest.mark.parametrize("fmt", ["gz", "zst"])
def test_every_flip_is_refused_or_changes_nothing(tmp_path, intact, fmt):
    """The sample: every bit of the headers and of the gzip trailer / zstd checksum, and 24 more bits."""
    cases = [c for c in hostile.corrupted_compressed() if c.name.startswith(fmt)]
    refused = 0
    for case in cases:
        src = tmp_path / f"in{case.suffix}"
        case.write(src)
        digest = _pack(src, tmp_path / "out.blob")
        if digest is None:
            refused += 1
        else:
            assert case.pack != "refuse", f"{case.id}: packed"
            assert digest == intact, f"{case.id}: packed into a different layer"
    # Most flips and every truncation are caught; the few accepted ones changed only ignored header bits.
    assert refused > len(cases) // 2, (refused, len(cases))


@pytest.mark.parametrize(
    ("fmt", "byte", "field", "needles"),
    [
        ("gz", -8, -8, ["gzip trailer", "CRC32"]),
        ("gz", -3, -4, ["gzip trailer", "ISIZE"]),
        ("zst", -2, -4, ["zstd", "checksum"]),
    ],
)
def test_a_bad_checksum_is_one_line_naming_the_offset(tmp_path, fmt, byte, field, needles):
    data = hostile.small_tar()
    packed = hostile.gzip_bytes(data) if fmt == "gz" else hostile.zstd_bytes(data)
    src = tmp_path / f"bad.tar.{fmt}"
    src.write_bytes(hostile.flipped(packed, (len(packed) + byte) * 8))
    line = assert_one_line_error(run_cli("pack", src, "-o", tmp_path / "out.blob"), 2, *needles)
    assert f"offset {len(packed) + field}" in line, line
    assert str(src) in line
    assert not (tmp_path / "out.blob").exists()
    with open(src, "rb") as f:  # the same from a pipe
        assert_one_line_error(run_cli("pack", "-", "-o", tmp_path / "out.blob", stdin=f), 2, *needles)


def test_diff_checks_its_compressed_source_too(tmp_path):
    data = hostile.small_tar()
    (tmp_path / "a.tar").write_bytes(data)
    assert run_cli("pack", tmp_path / "a.tar", "-o", tmp_path / "a.blob").returncode == 0
    packed = hostile.gzip_bytes(data)
    (tmp_path / "bad.tar.gz").write_bytes(hostile.flipped(packed, (len(packed) - 5) * 8))
    assert_one_line_error(run_cli("diff", tmp_path / "bad.tar.gz", tmp_path / "a.blob"), 2, "CRC32")


def _read_all(stream) -> bytes:
    out = io.BytesIO()
    while block := stream.read(1 << 16):
        out.write(block)
    return out.getvalue()


def test_members_and_frames_follow_each_other():
    """Several gzip members (with zero padding after them), several zstd frames and a skippable frame."""
    a, b = hostile.text("one", 100_000), hostile.text("two", 70_000)
    gz = hostile.gzip_bytes(a) + bytes(5) + hostile.gzip_bytes(b)
    assert _read_all(decompress.open_gzip(io.BytesIO(gz), "x")) == a + b
    skippable = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    zs = hostile.zstd_bytes(a) + skippable + hostile.zstd_bytes(b, checksum=False)
    assert _read_all(decompress.open_zstd(io.BytesIO(zs), "x")) == a + b


@pytest.mark.parametrize("fmt", ["gz", "zst"])
def test_garbage_after_the_last_member_is_refused(fmt):
    data = hostile.text("one", 10_000)
    packed = hostile.gzip_bytes(data) if fmt == "gz" else hostile.zstd_bytes(data)
    opener = decompress.open_gzip if fmt == "gz" else decompress.open_zstd
    with pytest.raises(FormatError, match=f"offset {len(packed)}" if fmt == "gz" else "offset"):
        _read_all(opener(io.BytesIO(packed + b"garbage!"), "x"))


def test_a_bomb_is_read_a_buffer_at_a_time():
    """1 GiB of zeros in about 40 KB of zstd and 1 MB of gzip: each read returns at most what was asked."""
    import zlib

    import zstandard

    zs = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    parts = [zs.compress(bytes(1 << 20)) for _ in range(1024)] + [zs.flush()]
    z = b"".join(parts)
    stream = decompress.open_zstd(io.BytesIO(z), "x")
    total = 0
    while block := stream.read(1 << 20):
        assert len(block) <= 1 << 20
        total += len(block)
    assert total == 1 << 30
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    gz = b"".join([comp.compress(bytes(1 << 20)) for _ in range(256)] + [comp.flush()])
    stream = decompress.open_gzip(io.BytesIO(gz), "x")
    total = 0
    while block := stream.read(1 << 20):
        total += len(block)
    assert total == 256 << 20
