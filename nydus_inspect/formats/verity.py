"""dm-verity hash trees (format version 1, as ``veritysetup format`` writes them), sans I/O.

A data area of ``data_blocks`` blocks is covered by a Merkle tree: level 0 holds the digest of each data
block, each level above the digests of the hash blocks below it, until one hash block is left; the root
hash is the digest of that block. Every digest is ``H(salt || block)`` (hash type 1; type 0, Chrome OS's,
puts the salt after the block and is not written here). Digests are packed into hash blocks at their
size rounded up to a power of two, the rest of each hash block is zeros, and the levels are stored top
level first. A data area of a single block has no hash blocks at all: its root hash is that block's digest.

The optional superblock (512 bytes, in a hash block of its own before the tree) records the parameters;
containerd's EROFS differ writes it, the seekable converter can leave it out, and then the parameters
travel beside the root hash instead.
"""

from __future__ import annotations

import hashlib
import struct
import uuid as uuid_mod
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import FormatError
from ._struct import round_up

SIGNATURE = b"verity\0\0"
SUPERBLOCK_SIZE = 512
DEFAULT_BLOCK_SIZE = 4096
#: containerd's EROFS differ formats with a salt of 32 zero bytes (veritysetup's default is random).
DEFAULT_SALT = bytes(32)
MAX_SALT = 256
_SB = struct.Struct("<8sII16s32sIIQH6s256s168s")
assert _SB.size == SUPERBLOCK_SIZE
_HASHES = {"sha256": 32, "sha512": 64, "sha1": 20}


@dataclass
class Params:
    """What a hash tree depends on; with these and the data, its root hash is determined."""

    data_blocks: int
    data_block_size: int = DEFAULT_BLOCK_SIZE
    hash_block_size: int = DEFAULT_BLOCK_SIZE
    algorithm: str = "sha256"
    salt: bytes = DEFAULT_SALT
    hash_type: int = 1

    def check(self) -> None:
        for name in ("data_block_size", "hash_block_size"):
            v = getattr(self, name)
            if v < 512 or v > 1 << 19 or v & (v - 1):
                raise FormatError("dm-verity", f"{name} must be a power of 2 from 512 to 512K", value=v)
        if self.algorithm not in _HASHES:
            raise FormatError(
                "dm-verity", f"unsupported hash algorithm (one of {sorted(_HASHES)})", value=self.algorithm
            )
        if len(self.salt) > MAX_SALT:
            raise FormatError("dm-verity", f"salt longer than {MAX_SALT} bytes", value=len(self.salt))
        if self.hash_type != 1:
            raise FormatError(
                "dm-verity", "only hash type 1 (the normal one) is supported", value=self.hash_type
            )
        if self.data_blocks < 1:
            raise FormatError("dm-verity", "no data blocks to cover", value=self.data_blocks)

    @property
    def digest_size(self) -> int:
        return _HASHES[self.algorithm]

    @property
    def hashes_per_block(self) -> int:
        # Each digest takes a power-of-two slot in a hash block.
        return self.hash_block_size // (1 << (self.digest_size - 1).bit_length())

    def levels(self) -> list[tuple[int, int]]:
        """(first hash block, block count) of each level, level 0 (over the data) first; block numbers
        count from the start of the tree, where the top level is stored."""
        counts = []
        n = self.data_blocks
        while n > 1:
            n = -(-n // self.hashes_per_block)
            counts.append(n)
        out = []
        pos = 0
        for count in reversed(counts):
            out.append((pos, count))
            pos += count
        return list(reversed(out))

    def tree_blocks(self) -> int:
        return sum(count for _, count in self.levels())

    def tree_size(self) -> int:
        return self.tree_blocks() * self.hash_block_size

    def digest(self, block: bytes) -> bytes:
        h = hashlib.new(self.algorithm, self.salt)
        h.update(block)
        return h.digest()


def root_block(params: Params) -> int | None:
    """Where in the tree (bytes from its start) the block whose digest is the root hash lies: the top level's
    one block, stored first; None for one data block, whose own digest is the root."""
    if params.data_blocks == 1:
        return None
    return params.levels()[-1][0] * params.hash_block_size


def _pack_level(params: Params, digests: list[bytes]) -> list[bytes]:
    slot = 1 << (params.digest_size - 1).bit_length()
    per = params.hashes_per_block
    pad = bytes(slot - params.digest_size)
    blocks = []
    for i in range(0, len(digests), per):
        body = b"".join(d + pad for d in digests[i : i + per]) if pad else b"".join(digests[i : i + per])
        blocks.append(body.ljust(params.hash_block_size, b"\0"))
    return blocks


def build_tree(params: Params, leaf_digests: list[bytes]) -> tuple[bytes, bytes]:
    """(root hash, the tree as stored) from the digests of the data blocks, in order."""
    params.check()
    if len(leaf_digests) != params.data_blocks:
        raise FormatError("dm-verity", f"{params.data_blocks} data blocks but {len(leaf_digests)} digests")
    if params.data_blocks == 1:
        return leaf_digests[0], b""
    levels: list[list[bytes]] = []
    digests = leaf_digests
    while True:
        blocks = _pack_level(params, digests)
        levels.append(blocks)
        if len(blocks) == 1:
            break
        digests = [params.digest(b) for b in blocks]
    root = params.digest(levels[-1][0])
    return root, b"".join(b"".join(blocks) for blocks in reversed(levels))


def data_digests(params: Params, data: bytes, first_block: int = 0) -> list[bytes]:
    """Digests of whole data blocks in ``data`` (a final partial block is zero-padded, as a device
    rounded up to the block size reads)."""
    bs = params.data_block_size
    out = []
    for off in range(0, len(data), bs):
        blk = data[off : off + bs]
        if len(blk) < bs:
            blk = blk.ljust(bs, b"\0")
        out.append(params.digest(blk))
    return out


@dataclass
class Damage:
    """One place the tree and the data disagree."""

    where: str  # "data" or "hash"
    block: int  # data block number, or hash block number counted from the start of the tree
    level: int  # the tree level whose entry did not match (0 for a data block)
    #: False only for the top hash block when nothing but its own digest disagrees (with the root hash):
    #: then the root hash given may as well be another image's.
    certain: bool = True

    def __str__(self) -> str:
        if self.where == "data":
            return f"data block {self.block} does not match its level-0 digest"
        return f"hash block {self.block} (level {self.level}) does not match the digest above it"


def check_tree(params: Params, leaf_digests: list[bytes], tree: bytes, root: bytes) -> list[Damage]:
    """Every data block and hash block found damaged, top down as the kernel reads them: the top hash block
    is checked against the root hash, and each block below against its entry in a parent that is itself
    sound. A block whose parent is damaged is taken as sound when it matches the parent's entry (a bit
    flipped in the parent elsewhere) and is not reported when it does not (the parent's entry is as
    suspect as the block): one flipped bit is located to the one block it is in."""
    params.check()
    if len(tree) != params.tree_size():
        raise FormatError(
            "dm-verity hash tree",
            f"{len(tree)} bytes, {params.tree_size()} expected for {params.data_blocks} data blocks",
            value=len(tree),
        )
    if len(leaf_digests) != params.data_blocks:
        raise FormatError("dm-verity", f"{params.data_blocks} data blocks but {len(leaf_digests)} digests")
    if params.data_blocks == 1:
        return [] if leaf_digests[0] == root else [Damage("data", 0, 0)]
    hbs = params.hash_block_size
    slot = 1 << (params.digest_size - 1).bit_length()
    per = params.hashes_per_block
    ds = params.digest_size
    levels = params.levels()
    top = len(levels) - 1
    damage: list[Damage] = []
    top_start = levels[top][0]
    parent_ok = [params.digest(tree[top_start * hbs : (top_start + 1) * hbs]) == root]
    if not parent_ok[0]:
        damage.append(Damage("hash", top_start, top, certain=False))
    for li in range(top, -1, -1):
        start, count = levels[li]
        if li:
            below_start = levels[li - 1][0]
            below = [
                params.digest(tree[(below_start + i) * hbs : (below_start + i + 1) * hbs])
                for i in range(levels[li - 1][1])
            ]
        else:
            below = leaf_digests
        child_ok = []
        for i, got in enumerate(below):
            b = start + i // per
            pos = b * hbs + (i % per) * slot
            match = tree[pos : pos + ds] == got
            if not match and parent_ok[i // per]:
                damage.append(Damage("data", i, 0) if li == 0 else Damage("hash", below_start + i, li - 1))
            child_ok.append(match)
        if li == top and damage and not all(child_ok):
            damage[0].certain = True  # the top block disagrees with the level below too: it is damaged
        parent_ok = child_ok
    return damage


@dataclass
class Superblock:
    params: Params
    uuid: bytes = bytes(16)
    version: int = 1

    def build(self, hash_block_size: int | None = None) -> bytes:
        p = self.params
        raw = _SB.pack(
            SIGNATURE,
            self.version,
            p.hash_type,
            self.uuid,
            p.algorithm.encode().ljust(32, b"\0"),
            p.data_block_size,
            p.hash_block_size,
            p.data_blocks,
            len(p.salt),
            bytes(6),
            p.salt.ljust(MAX_SALT, b"\0"),
            bytes(168),
        )
        return raw.ljust(hash_block_size or SUPERBLOCK_SIZE, b"\0")

    @classmethod
    def parse(cls, buf, offset: int = 0) -> Superblock:
        if len(buf) - offset < SUPERBLOCK_SIZE:
            raise FormatError("dm-verity superblock", "truncated", offset=offset, value=len(buf) - offset)
        sig, version, htype, uid, alg, dbs, hbs, nblocks, salt_size, _, salt, _ = _SB.unpack_from(buf, offset)
        if sig != SIGNATURE:
            raise FormatError("dm-verity superblock", "bad signature", offset=offset, value=sig)
        if version != 1:
            raise FormatError("dm-verity superblock", "unsupported version", offset=offset + 8, value=version)
        if salt_size > MAX_SALT:
            raise FormatError(
                "dm-verity superblock", "salt size over 256", offset=offset + 88, value=salt_size
            )
        params = Params(
            data_blocks=nblocks,
            data_block_size=dbs,
            hash_block_size=hbs,
            algorithm=alg.rstrip(b"\0").decode("ascii", "replace"),
            salt=salt[:salt_size],
            hash_type=htype,
        )
        params.check()
        return cls(params, uid, version)


def uuid_for(root: bytes) -> bytes:
    """A superblock UUID derived from the root hash: the image stays a function of its input (veritysetup
    and containerd pick a random one; nothing checks it)."""
    return uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, "dm-verity:" + root.hex()).bytes


@dataclass
class Layout:
    """Where a verity payload sits in an image file: data ``[0, hash_offset)``, then (optionally) the
    superblock in a hash block of its own, then the tree."""

    hash_offset: int
    tree_offset: int
    params: Params
    superblock: bool


def layout_for(data_size: int, params: Params | None = None, *, superblock: bool = True) -> Layout:
    """The payload layout for ``data_size`` bytes of data (rounded up to whole blocks, as containerd does)."""
    params = params or Params(data_blocks=1)
    bs = params.data_block_size
    hash_offset = round_up(data_size, bs)
    params.data_blocks = max(hash_offset // bs, 1)
    sb = round_up(SUPERBLOCK_SIZE, params.hash_block_size) if superblock else 0
    return Layout(hash_offset, hash_offset + sb, params, superblock)


def leaf_digests(params: Params, blocks: Iterable[bytes]) -> list[bytes]:
    return [params.digest(b) for b in blocks]
