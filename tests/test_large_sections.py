"""blob.digest and the chunk-info array of a layer of many chunks: checked by streaming, then read a few pages
at a time where they lie (an uncompressed entry of a local file) or from the temporary file they were
decoded into (compressed, or a remote source), never held whole on the heap.

The layers here are small; the size past which a section is handled so
(``chunks.sections.SPILL_SECTION``) is set to 0 so that their sections take that path."""

from __future__ import annotations

import os
import shutil

import pytest
from test_memory_bounded import _distinct_chunks_tar

from nydus_inspect import layer as layer_mod
from nydus_inspect import pack as pack_mod
from nydus_inspect.chunks import sections as sections_mod
from nydus_inspect.chunks.source import LocalFile, SourceBytes
from nydus_inspect.errors import FormatError
from nydus_inspect.layer import Layer
from nydus_inspect.verify import verify

CHUNKS = 3000


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    d = tmp_path_factory.mktemp("sections")
    tar = d / "layer.tar.zst"
    _distinct_chunks_tar(tar, CHUNKS)
    out = d / "layer.blob"
    pack_mod.pack(str(tar), str(out), pack_mod.PackOptions(chunk_size=0x1000))
    return out


@pytest.fixture
def spill(monkeypatch):
    monkeypatch.setattr(sections_mod, "SPILL_SECTION", 0)


@pytest.fixture(scope="module")
def whole(blob):
    """The records and digests as read whole onto the heap (a module fixture: made before ``spill``)."""
    with Layer(str(blob)) as ly:
        assert isinstance(ly.chunk_infos.data, bytes) and isinstance(ly.chunk_digests.data, bytes)
        return list(ly.chunk_infos), list(ly.chunk_digests)


def _temporary_files(prefix: str) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.basename(target).startswith(prefix):
            out.append(target)
    return out


class _Source:
    """A non-local source over a file (what a registry blob is to a layer), counting its reads; after
    ``change_after`` reads it serves every byte of ``changed`` flipped, as a remote blob replaced under the
    same URL would."""

    def __init__(self, path, changed: tuple[int, int] | None = None, change_after: int | None = None):
        self.inner = LocalFile(str(path))
        self.path, self.size, self.fd = self.inner.path, self.inner.size, self.inner.fd
        self.reads = 0
        self.changed, self.change_after = changed, change_after

    def pread(self, offset, size, what="data"):
        self.reads += 1
        data = self.inner.pread(offset, size, what)
        if self.changed is not None and self.change_after is not None and self.reads > self.change_after:
            lo, hi = max(offset, self.changed[0]), min(offset + size, self.changed[1])
            if lo < hi:
                data = bytearray(data)
                for i in range(lo - offset, hi - offset):
                    data[i] ^= 0xFF
                data = bytes(data)
        return data

    def will_need(self, offset=0, size=0):
        pass

    def close(self):
        self.inner.close()


def test_sections_of_a_local_file_are_read_in_place_or_from_a_temporary_file(blob, whole, spill):
    infos, digests = whole
    assert len(infos) == len(digests) == CHUNKS
    with Layer(str(blob)) as ly:
        assert ly.entry_location("blob.digest")[2].name == "NONE"
        assert ly.entry_location("blob.meta")[2].name == "ZSTD"
        got_digests = ly.chunk_digests
        # blob.digest is stored uncompressed: read where it lies, no temporary file.
        assert isinstance(got_digests.data, SourceBytes)
        assert _temporary_files("nydus-inspect-blob.digest-") == []
        got_infos = ly.chunk_infos
        # blob.meta is zstd: decoded into an unlinked temporary file as it was hashed.
        assert isinstance(got_infos.data, SourceBytes)
        spilled = _temporary_files("nydus-inspect-blob.meta-")
        assert len(spilled) == 1 and spilled[0].endswith("(deleted)")
        assert list(got_digests) == digests
        assert list(got_infos) == infos
        assert got_infos[CHUNKS - 1] == infos[-1] and got_digests[-1] == digests[-1]
    assert _temporary_files("nydus-inspect-blob.meta-") == []  # closed with the layer


def test_sections_of_a_remote_source_are_kept_as_hashed(blob, whole, spill):
    """A remote blob's sections are read once, hashed as they are copied to a temporary file, and read from
    there: a later range of the source that differs from what was hashed is never seen."""
    infos, digests = whole
    with Layer(str(blob)) as probe:
        off, size = probe.entry_location("blob.digest")[:2]
    # Every read after the ToC's and the sections' own serves blob.digest changed.
    src = _Source(blob, changed=(off, off + size))
    with Layer(str(blob), source=src) as ly:
        got_digests, got_infos = ly.chunk_digests, ly.chunk_infos
        src.change_after = src.reads
        before = src.reads
        assert list(got_digests) == digests
        assert list(got_infos) == infos
        assert src.reads == before  # nothing read from the source again
        assert len(_temporary_files("nydus-inspect-blob.digest-")) == 1


@pytest.mark.parametrize("section", ["blob.digest", "blob.meta"])
@pytest.mark.parametrize("where", ["local", "remote"])
def test_a_damaged_large_section_is_refused_before_use(blob, tmp_path, spill, section, where):
    bad = tmp_path / "bad.blob"
    shutil.copy(blob, bad)
    with Layer(str(bad)) as probe:
        off, size = probe.entry_location(section)[:2]
    with open(bad, "r+b") as f:
        f.seek(off + size // 2)
        byte = f.read(1)
        f.seek(off + size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    source = _Source(bad) if where == "remote" else None
    with Layer(str(bad), source=source) as ly:
        with pytest.raises(FormatError, match=f"{section}|sha256|zstd"):
            ly.chunk_digests if section == "blob.digest" else ly.chunk_infos  # noqa: B018
    assert _temporary_files(f"nydus-inspect-{section}-") == []  # the partial copy is gone


def test_verify_reads_large_sections_in_pieces(blob, tmp_path, spill):
    """verify of a layer whose sections are read in pieces: clean when intact, and a damaged digest in
    blob.digest is reported as such."""
    with Layer(str(blob)) as ly:
        report = verify(ly)
    assert report.ok, [str(f) for f in report.findings[:3]]
    bad = tmp_path / "bad.blob"
    shutil.copy(blob, bad)
    with Layer(str(bad)) as probe:
        off = probe.entry_location("blob.digest")[0]
    with open(bad, "r+b") as f:
        f.seek(off + 32 * 1234)
        f.write(bytes(32))
    with Layer(str(bad)) as ly:
        report = verify(ly)
    assert not report.ok
    assert any("blob.digest" in str(f) for f in report.findings), [str(f) for f in report.findings[:5]]


def test_verify_keeps_little_for_each_distinct_chunk(tmp_path, monkeypatch):
    """Heap bytes per distinct chunk while verify runs (the growth from 20,000 to 100,000 chunks, so that
    start-up cancels out), with the bootstrap and both sections past their spill sizes as at millions of
    chunks: what stays per chunk is its first use (8 bytes) and its chunk table row (4). Decoding the
    chunk-info array whole, five columns of every chunk at once, blob.digest on the heap and a Future kept per
    batch took about 150."""
    import tracemalloc

    monkeypatch.setattr(sections_mod, "SPILL_SECTION", 0)
    monkeypatch.setattr(layer_mod, "SPILL_BOOTSTRAP", 0)
    monkeypatch.setattr(SourceBytes, "PAGES", 16)
    peaks = {}
    for n in (20_000, 100_000):
        tar = tmp_path / f"{n}.tar.zst"
        _distinct_chunks_tar(tar, n)
        out = tmp_path / f"{n}.blob"
        pack_mod.pack(str(tar), str(out), pack_mod.PackOptions(chunk_size=0x1000))
        tracemalloc.start()
        try:
            with Layer(str(out)) as ly:
                report = verify(ly)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.ok and report.checked.get("chunks") == n, [str(f) for f in report.findings[:3]]
    per_chunk = (peaks[100_000] - peaks[20_000]) / 80_000
    assert 0 < per_chunk < 40, f"verify: {per_chunk:.0f} heap bytes per distinct chunk ({peaks})"
