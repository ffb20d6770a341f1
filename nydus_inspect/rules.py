"""Image rules for CI (``verify --rules RULES.yaml``), in the spirit of dive's ``.dive-ci``.

dive's three rules keep dive's names and meaning, measured by the layer analysis
(:mod:`nydus_inspect.analyze`, which the README defines figure by figure): *wasted* bytes are the
file versions a layer stores that no path of the final image reaches (overwritten or removed by an
upper layer). The other rules measure what dive cannot see, from the chunks: those come from the
bootstrap alone (which chunks the tree references, what each blob stores; uncompressed chunk bytes,
4K-aligned as stored).

Rules file (YAML or JSON)::

    rules:
      lowestEfficiency: 0.95              # dive: 1 - wasted / bytes all layers store
      highestWastedBytes: 20MB            # dive: bytes of overwritten or removed file versions
      highestUserWastedPercent: 0.10      # dive: wasted / bytes the layers above the lowest store
      highestDuplicateChunkBytes: 50MB    # compressed chunks a lower layer's blob stores already
      lowestPrefetchCoverage: 0.5         # share of the image's file bytes the prefetch table names
      highestUnusedChunkBytes: 20MB       # stored chunks no file of the image references, or duplicated
      lowestCompressionRatio: 1.5         # referenced uncompressed bytes / their compressed bytes
      highestChunkCount: 1000000
      highestBlobCount: 64

A value of ``disabled`` turns a rule off. The analysis runs only when a rule needs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import UsageError
from .formats._struct import round_up
from .layer import Layer
from .model import REG

#: rule -> (what measures it: the layer "analysis" or the bootstrap's chunk "stats", its figure, a min or max limit)
RULES = {
    "lowestEfficiency": ("analysis", "efficiency", "min"),
    "highestWastedBytes": ("analysis", "wasted_bytes", "max"),
    "highestUserWastedPercent": ("analysis", "user_wasted_fraction", "max"),
    "highestDuplicateChunkBytes": ("analysis", "duplicate_chunk_bytes", "max"),
    "lowestPrefetchCoverage": ("analysis", "prefetch_coverage", "min"),
    "highestUnusedChunkBytes": ("stats", "wasted_bytes", "max"),
    "lowestCompressionRatio": ("stats", "compression_ratio", "min"),
    "highestChunkCount": ("stats", "chunks", "max"),
    "highestBlobCount": ("stats", "blobs", "max"),
}
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


@dataclass
class RuleResult:
    rule: str
    limit: float
    value: float
    ok: bool

    def to_json(self) -> dict:
        return {"rule": self.rule, "limit": self.limit, "value": self.value, "ok": self.ok}

    def __str__(self) -> str:
        word = "PASS" if self.ok else "FAIL"
        return f"{word}: {self.rule}: {_fmt(self.value)} (limit {_fmt(self.limit)})"


@dataclass
class ImageStats:
    blobs: int = 0
    chunks: int = 0  # distinct chunks referenced by files
    stored_bytes: int = 0  # uncompressed bytes the blobs store (from the blob table)
    referenced_bytes: int = 0  # uncompressed bytes of the distinct referenced chunks
    referenced_compressed: int = 0
    duplicate_bytes: int = 0
    unreferenced_bytes: int = 0
    per_blob: list[dict] = field(default_factory=list)

    @property
    def wasted_bytes(self) -> int:
        return self.duplicate_bytes + self.unreferenced_bytes

    @property
    def wasted_fraction(self) -> float:
        return self.wasted_bytes / self.stored_bytes if self.stored_bytes else 0.0

    @property
    def efficiency(self) -> float:
        return 1.0 - self.wasted_fraction

    @property
    def compression_ratio(self) -> float:
        return self.referenced_bytes / self.referenced_compressed if self.referenced_compressed else 1.0

    def to_json(self) -> dict:
        return {
            "blobs": self.blobs,
            "chunks": self.chunks,
            "stored_bytes": self.stored_bytes,
            "referenced_bytes": self.referenced_bytes,
            "duplicate_bytes": self.duplicate_bytes,
            "unreferenced_bytes": self.unreferenced_bytes,
            "wasted_bytes": self.wasted_bytes,
            "efficiency": round(self.efficiency, 6),
            "compression_ratio": round(self.compression_ratio, 4),
            "per_blob": self.per_blob,
        }


def image_stats(layer: Layer) -> ImageStats:
    """Chunk usage of the layer's (or merged image's) bootstrap."""
    r = layer.rafs
    seen: dict[tuple[int, int], tuple[bytes, int, int]] = {}
    for node in r.walk():
        if node.type != REG:
            continue
        for c in r.chunks(node):
            seen.setdefault((c.blob_index, c.ci_index), (c.digest, c.uncompressed_size, c.compressed_size))
        node.chunks = None
    st = ImageStats(blobs=len(r.blobs), chunks=len(seen))
    used_per_blob = [0] * len(r.blobs)
    by_digest: dict[bytes, int] = {}
    for (blob, _ci), (digest, usize, csize) in seen.items():
        aligned = round_up(usize, 4096)
        used_per_blob[blob] += aligned
        st.referenced_bytes += usize
        st.referenced_compressed += csize
        if digest:
            if digest in by_digest:
                st.duplicate_bytes += aligned
            by_digest[digest] = by_digest.get(digest, 0) + 1
    for ent in r.blobs:
        stored = ent.uncompressed_size
        st.stored_bytes += stored
        unref = max(0, stored - used_per_blob[ent.blob_index])
        st.unreferenced_bytes += unref
        st.per_blob.append(
            {
                "index": ent.blob_index,
                "blob_id": layer.blob_id(ent.blob_index),
                "stored_bytes": stored,
                "referenced_bytes": used_per_blob[ent.blob_index],
                "unreferenced_bytes": unref,
            }
        )
    return st


def load_rules(path: str) -> dict[str, float | None]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the rules file: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise many kinds
        raise UsageError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return parse_rules(doc, path)


def parse_rules(doc, where: str) -> dict[str, float | None]:
    """Rules from a parsed document: ``{"rules": {name: limit}}`` or the inner mapping itself."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules", {}), dict):
        raise UsageError(f"{where}: expected a mapping with a 'rules' mapping")
    rules = doc.get("rules", doc)
    out: dict[str, float | None] = {}
    for name, value in rules.items():
        if name not in RULES:
            raise UsageError(f"{where}: unknown rule {name!r} (known: {', '.join(RULES)})")
        out[name] = _parse_value(name, value, where)
    return out


def _parse_value(name: str, value, path: str) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "disabled":
        return None
    if isinstance(value, bool):
        raise UsageError(f"{path}: rule {name}: expected a number, found {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"{path}: rule {name}: expected a number like 20MB or 0.95, found {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def needs_analysis(rules: dict[str, float | None]) -> bool:
    """Whether a rule that is not disabled needs the layer analysis."""
    return any(limit is not None and RULES[name][0] == "analysis" for name, limit in rules.items())


def apply_rules(rules: dict[str, float | None], stats: ImageStats | None, analysis=None) -> list[RuleResult]:
    """Each enabled rule against its figure: ``stats`` from :func:`image_stats`, ``analysis`` from
    :func:`nydus_inspect.analyze.analyze` (needed only when :func:`needs_analysis` says so)."""
    results = []
    for name, limit in rules.items():
        if limit is None:
            continue
        source, attr, kind = RULES[name]
        measured = analysis if source == "analysis" else stats
        if measured is None:
            raise UsageError(
                f"rule {name} needs the {'layer analysis' if source == 'analysis' else 'chunk stats'}"
            )
        value = float(getattr(measured, attr))
        ok = value >= limit if kind == "min" else value <= limit
        results.append(RuleResult(name, limit, value, ok))
    return results


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"
