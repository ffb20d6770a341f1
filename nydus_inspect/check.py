"""check: is a nydus image the same file system as the OCI image it was converted from?

The source image's layers are described one by one (:func:`.diff.describe_tar`) and stacked as overlayfs
stacks them (``.wh.NAME`` removes NAME, ``.wh..wh..opq`` empties its directory of what lower layers put
there); the nydus image's merged bootstrap is read with its data through the blobs as it is compared
(:class:`.diff.LayerEntries`); :func:`.diff.compare` names every difference. Each nydus layer is verified
besides. No mount and no root: everything is read from the layout files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .diff import Difference, Entry, LayerEntries, Tree, compare, describe_tar
from .errors import UsageError
from .layer import open_layer
from .oci import TAR_LAYER_TYPES, OciLayout, Platform, is_nydus_image, select_images

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"


@dataclass
class CheckResult:
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # findings of the nydus image's own verification

    @property
    def ok(self) -> bool:
        return not self.differences and not self.problems

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "differences": [d.to_json() for d in self.differences],
            "verify": self.problems,
        }


def _parent(path: bytes) -> bytes:
    head = path.rsplit(b"/", 1)[0]
    return head or b"/"


def _below(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top.rstrip(b"/") + b"/")


def stack(layers: list[Tree]) -> Tree:
    """The overlay of ``layers`` (lowest first), whiteouts applied and gone."""
    merged: dict[bytes, Entry] = {}
    explicit_root = False
    for tree in layers:
        explicit_root = explicit_root or tree.explicit_root
        for path in sorted(tree.entries):
            name = path.rsplit(b"/", 1)[-1]
            if name == OPAQUE:
                parent = _parent(path)
                for p in [p for p in merged if p != parent and _below(p, parent) and p not in tree.entries]:
                    del merged[p]
            elif name.startswith(WHITEOUT):
                gone = _parent(path).rstrip(b"/") + b"/" + name[len(WHITEOUT) :]
                for p in [p for p in merged if _below(p, gone)]:
                    del merged[p]
        for path, entry in tree.entries.items():
            name = path.rsplit(b"/", 1)[-1]
            if name.startswith(WHITEOUT):
                continue
            if entry.type != "dir" or path not in merged:
                # A path a layer holds replaces the lower one; a directory only updates its attributes.
                for p in [p for p in merged if p != path and _below(p, path)] if entry.type != "dir" else []:
                    del merged[p]
            merged[path] = entry
    # Hard link groups: only the names that are still there, and still the same inode.
    for entry in merged.values():
        if entry.hardlinks:
            kept = tuple(
                p
                for p in entry.hardlinks
                if merged.get(p) is not None and merged[p].hardlinks == entry.hardlinks
            )
            if len(kept) != len(entry.hardlinks):
                entry.hardlinks = kept if len(kept) > 1 else ()
    return Tree(merged, explicit_root)


def source_tree(root: str, platforms: list[Platform] | None) -> Tree:
    layout = OciLayout(root)
    image = _one(layout, platforms, root)
    if is_nydus_image(image.manifest):
        raise UsageError(
            f"{root}: the source image {image.digest} is already a nydus image; give its OCI source"
        )
    trees = []
    for i, desc in enumerate(image.manifest["layers"]):
        if desc.get("mediaType") not in TAR_LAYER_TYPES:
            raise UsageError(
                f"{root}: layer {i} of {image.digest}: media type {desc.get('mediaType')!r} is no tar layer"
            )
        trees.append(describe_tar(layout.check_blob(desc, f"layer {i} of manifest {image.digest}")))
    return stack(trees)


def _one(layout: OciLayout, platforms, root: str):
    images = select_images(list(layout.images()), platforms, root)
    if len(images) > 1:
        raise UsageError(f"{root}: holds several images; pick one with --platform")
    return images[0]


def check(nydus_root: str, source_root: str, platforms: list[Platform] | None = None) -> CheckResult:
    """Compare the nydus image in the layout ``nydus_root`` with its source in ``source_root``."""
    from .verify import verify

    for root in (nydus_root, source_root):
        if not os.path.isdir(root):
            raise UsageError(f"{root}: not an OCI image layout directory")
    expected = source_tree(source_root, platforms)
    result = CheckResult()
    with open_layer(nydus_root) as layer:
        result.differences = list(compare(expected, LayerEntries(layer)))
        report = verify(layer)
        result.problems = [str(f) for f in report.findings] if not report.ok else []
    return result


__all__ = ["CheckResult", "check", "source_tree", "stack"]
