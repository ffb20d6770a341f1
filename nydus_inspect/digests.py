"""Chunk digesters (blake3, sha256) and CRC32C, as RAFS names them."""

from __future__ import annotations

import enum
import hashlib

import blake3 as _blake3


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


def _load_crc32c():
    """The ``crc32c`` package's C function, without running the package's ``__init__``.

    That ``__init__`` imports importlib.metadata and argparse for its version and command line, which
    costs more start-up time than packing a small layer; the extension module alone is all we use.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    try:
        spec = importlib.util.find_spec("crc32c")
        for folder in spec.submodule_search_locations or ():
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, f"_crc32c{suffix}")
                if not os.path.exists(path):
                    continue
                ext_spec = importlib.util.spec_from_file_location("crc32c._crc32c", path)
                module = sys.modules.get("crc32c._crc32c") or importlib.util.module_from_spec(ext_spec)
                ext_spec.loader.exec_module(module)
                return module.crc32c
    except (ImportError, AttributeError, OSError, TypeError):
        pass
    import crc32c as package  # the layout changed: take the slow, supported way

    return package.crc32c


_crc32c_fn = None


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), as nydus v2.3.2+ stores per chunk."""
    global _crc32c_fn
    if _crc32c_fn is None:
        _crc32c_fn = _load_crc32c()
    return _crc32c_fn(data)
