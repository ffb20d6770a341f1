"""What verify reports: :class:`Finding` (one problem, and where), :class:`Report`, and the helpers
that turn errors and values into findings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..errors import SHOWN, FormatError, NydusInspectError, cut

if TYPE_CHECKING:
    from .run import _Run

#: Findings kept per check; the rest are only counted (a badly broken blob would otherwise list millions).
DEFAULT_LIMIT = 1000

STAGES = ("bootstrap", "toc", "blob.meta", "chunks", "roundtrip")

Progress = Callable[[str, int, int], None]


class Cancelled(NydusInspectError):
    """Verification stopped because ``cancel()`` said so."""


@dataclass(frozen=True)
class Finding:
    """One failed check, with where it is."""

    check: str
    message: str
    structure: str | None = None  # the on-disk structure: "rafs.blob.toc", "blob.meta.header", "chunk", ...
    file: str | None = None  # which file on disk (the layer, or one of its blob files)
    entry: str | None = None  # ToC entry name
    blob_index: int | None = None
    chunk: int | None = None  # chunk index in the blob's blob.meta
    path: str | None = None  # the file in the image (for chunks: the first file using it)
    paths: tuple[str, ...] = ()  # every file using the chunk
    offset: int | None = None  # absolute offset in ``file``
    field: str | None = None
    expected: str | None = None
    found: str | None = None

    @property
    def where(self) -> str:
        parts = []
        if self.entry is not None:
            parts.append(f"entry {self.entry}")
        if self.chunk is not None:
            parts.append(
                f"chunk {self.chunk}" + (f" of blob {self.blob_index}" if self.blob_index is not None else "")
            )
        elif self.blob_index is not None:
            parts.append(f"blob {self.blob_index}")
        if self.structure is not None and self.entry is None and self.chunk is None:
            parts.append(self.structure)
        if self.field is not None:
            parts.append(f"field {self.field}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        # Paths, messages and values are cut where they are shown: a name can be KBs, a deep path MBs.
        if self.paths:
            shown = ", ".join(cut(p) for p in self.paths[:3]) + (
                f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else ""
            )
            parts.append(f"file {shown}")
        elif self.path is not None:
            parts.append(f"file {cut(self.path)}")
        return ", ".join(parts) or "layer"

    def to_json(self) -> dict:
        out: dict = {"check": self.check, "message": self.message, "where": self.where}
        for f in fields(self):
            if f.name in ("check", "message"):
                continue
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __str__(self) -> str:
        text = f"{self.check}: {self.where}: {cut(self.message, 4 * SHOWN)}"
        said = [
            f"{k} {_short(v)}"
            for k, v in (("expected", self.expected), ("found", self.found))
            if v is not None
        ]
        return f"{text} ({', '.join(said)})" if said else text


@dataclass
class Report:
    """What :func:`verify` found. ``ok`` is True when no check failed."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # items checked per stage
    suppressed: dict[str, int] = field(default_factory=dict)  # findings over the limit, per check
    notes: list[str] = field(default_factory=list)  # assumptions made, checks that could not run
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings and not self.suppressed and not self.cancelled

    @property
    def failures(self) -> int:
        return len(self.findings) + sum(self.suppressed.values())

    def summary(self) -> str:
        done = ", ".join(f"{n} {k}" for k, n in self.checked.items() if n)
        if self.cancelled:
            return f"cancelled after checking {done or 'nothing'}"
        if self.ok:
            return f"OK: checked {done or 'nothing'}"
        return f"FAILED: {self.failures} finding(s); checked {done}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "failures": self.failures,
            "checked": dict(self.checked),
            "findings": [f.to_json() for f in self.findings],
            "suppressed": dict(self.suppressed),
            "notes": list(self.notes),
            "cancelled": self.cancelled,
        }


def _guard(run: _Run, check: str, path: str, fn, *args) -> None:
    """Run one stage; bad bytes it did not foresee become a finding instead of ending the run."""
    try:
        fn(*args)
    except Cancelled:
        raise
    except NydusInspectError as exc:
        run.add(_exc_finding(check, exc, file=path))


def _exc_finding(check: str, exc: NydusInspectError, **kw) -> Finding:
    if isinstance(exc, FormatError):
        kw.setdefault("structure", exc.structure)
        kw.setdefault("offset", exc.offset)
        kw.setdefault("field", exc.field)
        if exc.where is not None:
            kw.setdefault("file", exc.where)
        if exc.value is not None:
            kw.setdefault("found", _show(exc.value))
        return Finding(check, exc.detail, **kw)
    return Finding(check, str(exc), **kw)


def _show(value: object) -> str:
    """A finding's expected or found value as text, cut to what a person reads (a raw name can be KBs)."""
    if isinstance(value, bytes | bytearray):
        if len(value) <= SHOWN // 2:
            return bytes(value).hex()
        return f"{bytes(value[: SHOWN // 2]).hex()}... ({len(value)} bytes)"
    return cut(str(value))


def _with(f: Finding, **kw) -> Finding:
    return Finding(**{**{x.name: getattr(f, x.name) for x in fields(f)}, **kw})


def _short(value: object) -> str:
    return "None" if value is None else cut(str(value))


def _check_nlinks(run: _Run, names: dict, first: dict, check: str, structure: str) -> None:
    """Each inode's ``i_nlink`` against what the walk counted: ``names`` maps a nid to its count (names in
    the tree, or 2 + subdirectories for a directory), ``first`` to (i_nlink, a path, type) as first met."""
    from ..model import DIR, fsdecode

    for nid, count in names.items():
        nlink, path, ntype = first[nid]
        if nlink != count:
            what = "2 + its subdirectories" if ntype == DIR else "its names in the tree"
            run.add(
                Finding(
                    check,
                    f"i_nlink differs from {what}",
                    structure=structure,
                    file=run.layer.path,
                    path=fsdecode(path),
                    field="i_nlink",
                    expected=str(count),
                    found=str(nlink),
                )
            )
