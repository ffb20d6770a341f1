"""The chunk service: the only code that turns a chunk reference into checked bytes.

- :mod:`.ref`: :class:`ChunkRef`, the one chunk reference type (named fields) every part of the program uses.
- :mod:`.source`: :class:`BlobSource`, where a blob's bytes come from (``pread`` and ``size``);
  :class:`LocalFile` is today's. A new source (an HTTP range reader) implements that protocol.
- :mod:`.resolve`: :class:`Blob`, one blob resolved: its source, compressor, digester and recorded digests,
  per blob (a merged bootstrap's blobs each keep their own algorithms).
- :mod:`.sections`: :class:`ChunkSections`, a layer's blob.meta chunk-info array and blob.digest, read and
  checked; large ones read in pages where they lie or from a temporary file, not held on the heap.
- :mod:`.decode`: :class:`ChunkReader`, the one decode-and-check path, single and batched, with the one
  decoded-chunk cache (:class:`ChunkCache`). A new codec plugs into ``codecs.decompress``.
- :mod:`.readahead`: the one read-ahead :class:`Scheduler` (urgent and background work, claimable items, an
  Executor), which the mount, verify and :func:`iter_with_data` (chunks of the coming files decoded ahead of
  a sequential reader) all drive.

Nothing is imported here, so that ``import nydus_inspect.model`` stays cheap.
"""
