"""Chunk digesters (blake3, sha256) and CRC32C, as RAFS names them."""

from __future__ import annotations

import enum
import hashlib

import blake3 as _blake3
import crc32c as _crc32c


class Digester(enum.Enum):
    BLAKE3 = "blake3"
    SHA256 = "sha256"

    @property
    def algo(self) -> int:
        """``digest_algo`` in the RAFS v6 blob table: 0 blake3, 1 sha256."""
        return 0 if self is Digester.BLAKE3 else 1

    @property
    def super_flag(self) -> int:
        return 0x4 if self is Digester.BLAKE3 else 0x8

    @classmethod
    def from_algo(cls, value: int) -> Digester:
        if value == 0:
            return cls.BLAKE3
        if value == 1:
            return cls.SHA256
        raise ValueError(f"unknown digest algorithm {value}")

    @classmethod
    def parse(cls, name: str) -> Digester:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown digester {name!r} (choose blake3 or sha256)") from None

    def digest(self, data: bytes) -> bytes:
        if self is Digester.BLAKE3:
            return _blake3.blake3(data).digest()
        return hashlib.sha256(data).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), as nydus v2.3.2+ stores per chunk."""
    return _crc32c.crc32c(data)
