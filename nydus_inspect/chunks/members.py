"""Chunks of an eStargz layer that share a gzip member (``innerOffset``): inflated from the member's start.

A TOC written with a minimum chunk size puts several small files (or chunks) in one gzip member; each entry
says where its bytes start in the member's output. Such a chunk cannot be inflated alone, as deflate refers
back into what came before it, so :class:`SharedMembers` inflates the member from its start and cuts the chunk
out. A member is inflated once for all its chunks read in order: the inflater is kept with its output (an
LRU over members, bounded in bytes), so ``cat`` or ``unpack`` of the many small files of one member, or
verify walking the TOC, goes on where the previous chunk ended instead of starting again. A member whose
output is large keeps only its last part (what lies before the chunk asked for is dropped), so memory stays
bounded whatever the member holds; reading an earlier chunk of it then inflates the member again. The
bytes are checked by :class:`~.decode.ChunkReader` like any other chunk's.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict

from ..errors import FormatError
from ..formats.estargz import Entry, Member
from .ref import ChunkRef

#: Compressed bytes read from the blob at once.
PIECE = 256 << 10
#: Output of one inflate call (bounds what a burst of highly compressed input makes at once).
STEP = 1 << 20
#: Output a member keeps before the chunk being read once it holds more than this.
KEEP_BEHIND = 8 << 20


class _Inflation:
    """One member being inflated: the zlib state, the next compressed byte to feed, and the output from
    ``base`` on."""

    __slots__ = ("base", "buf", "d", "eof", "lock", "offset", "pos")

    def __init__(self, offset: int) -> None:
        self.lock = threading.Lock()
        self.offset = offset
        self.reset()

    def reset(self) -> None:
        """Back to the member's start."""
        self.d = zlib.decompressobj(wbits=31)  # one gzip member, its header and trailer checked
        self.pos = self.offset
        self.base = 0
        self.buf = bytearray()
        self.eof = False

    @property
    def have(self) -> int:
        return self.base + len(self.buf)


class SharedMembers:
    """The shared-member chunks of one eStargz blob read from ``source``; ``placement`` maps a chunk's
    ``ci_index`` to its member and TOC entry (estargz.Index.placement)."""

    #: Output kept over all members, and how many members are kept.
    KEEP_BYTES = 32 << 20
    KEEP_MEMBERS = 8

    def __init__(self, source, placement: dict[int, tuple[Member, Entry]]) -> None:
        self.source = source
        self.placement = placement
        #: How many times a member was inflated from its start (a count the laziness tests read).
        self.inflations = 0
        self._lock = threading.Lock()
        self._states: OrderedDict[int, _Inflation] = OrderedDict()

    def __contains__(self, ci_index: int) -> bool:
        return ci_index in self.placement

    def chunk(self, ref: ChunkRef) -> bytes:
        """A shared-member chunk's bytes (unchecked; the reader checks them)."""
        member, entry = self.placement[ref.ci_index]
        return self.read(member, entry.inner_offset, entry.chunk_size, ref.name)

    def read(self, member: Member, start: int, size: int, name: str = "chunk") -> bytes:
        """``size`` bytes from ``start`` of ``member``'s output; FormatError naming ``name`` when the member does
        not inflate that far."""
        with self._lock:
            state = self._states.get(member.offset)
            if state is None:
                state = self._states[member.offset] = _Inflation(member.offset)
            self._states.move_to_end(member.offset)
        with state.lock:
            try:
                data = self._cut(state, member, start, size, name)
            except FormatError:
                # A member that failed is read again from its start next time (and says again what is wrong).
                state.reset()
                self._forget(member.offset, state)
                raise
        self._trim()
        return data

    def _cut(self, state: _Inflation, member: Member, start: int, size: int, name: str) -> bytes:
        if start < state.base:
            # The output before this chunk was dropped: inflate the member again.
            state.reset()
        if state.pos == member.offset:
            with self._lock:
                self.inflations += 1
        end = start + size
        while state.have < end and not state.eof:
            if len(state.buf) > KEEP_BEHIND and start > state.base:
                cut = min(start, state.have) - state.base
                del state.buf[:cut]
                state.base += cut
            tail = state.d.unconsumed_tail
            if not tail:
                if state.pos >= member.end:
                    break
                n = min(PIECE, member.end - state.pos)
                tail = self.source.pread(state.pos, n, f"gzip member at {member.offset}")
                state.pos += n
            try:
                state.buf += state.d.decompress(tail, STEP)
            except zlib.error as exc:
                raise FormatError(
                    name, f"the gzip member at {member.offset} does not inflate: {exc}", offset=member.offset
                ) from None
            state.eof = state.d.eof
        if state.have < end:
            raise FormatError(
                name,
                f"the gzip member at {member.offset} inflates to {state.have} bytes, short of innerOffset "
                f"{start} + size {size}",
                offset=member.offset,
                value=start,
            )
        at = start - state.base
        return bytes(state.buf[at : at + size])

    def _forget(self, offset: int, state: _Inflation) -> None:
        with self._lock:
            if self._states.get(offset) is state:
                del self._states[offset]

    def _trim(self) -> None:
        """Drop the least recently used members past the bounds."""
        with self._lock:
            used = sum(len(s.buf) for s in self._states.values())
            while len(self._states) > 1 and (used > self.KEEP_BYTES or len(self._states) > self.KEEP_MEMBERS):
                _, dropped = self._states.popitem(last=False)
                used -= len(dropped.buf)
