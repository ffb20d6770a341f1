"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/sha256/…``): read them with every blob checked,
pick images by platform, and find a nydus image's bootstrap layer.

Documents are kept as the dicts ``json`` gives, so fields this module does not know pass through a rewrite
untouched. Media types and annotations are the ones the nydus snapshotter's converter uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import FormatError, UsageError

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: Layer media types whose content is a tar (plain, gzip or zstd; the compression is sniffed from the bytes).
TAR_LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        OCI_LAYER_GZIP,
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        DOCKER_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"

ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
ANNOTATION_NYDUS_BLOB = "containerd.io/snapshot/nydus-blob"
ANNOTATION_NYDUS_BOOTSTRAP = "containerd.io/snapshot/nydus-bootstrap"
ANNOTATION_FS_VERSION = "containerd.io/snapshot/nydus-fs-version"
OS_FEATURE_NYDUS = "nydus.remoteimage.v1"

#: JSON documents (index, manifest, config) are small; refuse to load anything larger.
MAX_JSON = 64 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def is_index(media_type: str | None) -> bool:
    return media_type in (OCI_INDEX, DOCKER_LIST)


def is_manifest(media_type: str | None) -> bool:
    return media_type in (OCI_MANIFEST, DOCKER_MANIFEST)


def is_nydus_blob(desc: dict) -> bool:
    """The snapshotter's IsNydusBlob: the layer carries the nydus-blob annotation."""
    return ANNOTATION_NYDUS_BLOB in (desc.get("annotations") or {})


def is_nydus_bootstrap(desc: dict) -> bool:
    return ANNOTATION_NYDUS_BOOTSTRAP in (desc.get("annotations") or {})


def is_erofs_layer(desc: dict) -> bool:
    """A containerd EROFS layer: a plain image (``application/vnd.erofs.layer.v1``) or a seekable one
    (``…v1+zstd``)."""
    return str(desc.get("mediaType", "")).startswith("application/vnd.erofs.layer")


def read_by_frame(desc: dict) -> bool:
    """A seekable EROFS layer whose descriptor says where its chunk table is and records the table's digest:
    its frames can be fetched by range, the table checked against the digest and each frame against the
    table (when it holds their SHA-512s, which the reader finds out)."""
    from .formats.seekable_erofs import ANNOTATION_CHUNK_DIGEST, ANNOTATION_CHUNK_TABLE_OFFSET

    ann = desc.get("annotations") or {}
    return (
        is_erofs_layer(desc)
        and str(desc.get("mediaType")).endswith("+zstd")
        and isinstance(ann.get(ANNOTATION_CHUNK_TABLE_OFFSET), str)
        and isinstance(ann.get(ANNOTATION_CHUNK_DIGEST), str)
    )


def is_nydus_image(manifest: dict) -> bool:
    """The snapshotter's isNydusImage: the last layer is a nydus bootstrap."""
    layers = manifest.get("layers") or []
    return bool(layers) and is_nydus_bootstrap(layers[-1])


def dumps(doc: dict) -> bytes:
    """Compact JSON, as Go's encoder writes it."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_file(path: str) -> tuple[str, int]:
    """(hex sha256, size) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


# ---------------------------------------------------------------------------- platforms
@dataclass(frozen=True)
class Platform:
    """An OCI platform (os, architecture, variant)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"platform {text!r}: expected OS/ARCH or OS/ARCH/VARIANT, as linux/amd64 or linux/arm64/v8"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, doc: dict | None) -> Platform | None:
        """The platform of a descriptor's ``platform`` or of an image config (None when it says nothing)."""
        if not doc or not doc.get("os") or not doc.get("architecture"):
            return None
        return cls(str(doc["os"]), str(doc["architecture"]), doc.get("variant") or None)

    def matches(self, other: Platform) -> bool:
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        # arm64 images rarely say their variant, which is v8 then.
        return (other.variant or ("v8" if other.architecture == "arm64" else None)) == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


DEFAULT_PLATFORM = Platform("linux", "amd64")


# ---------------------------------------------------------------------------- reading a layout
@dataclass
class Image:
    """One image manifest found in a layout, with the chain of descriptors that leads to it."""

    desc: dict  # the manifest's descriptor, as its parent lists it
    manifest: dict
    config: dict
    platform: Platform | None
    parents: list[dict] = field(default_factory=list)  # index descriptors from index.json down

    @property
    def digest(self) -> str:
        return self.desc["digest"]


class OciLayout:
    """An OCI image layout directory opened for reading; every blob read is checked against its descriptor."""

    def __init__(self, root: str) -> None:
        self.root = root
        if not os.path.isdir(root):
            raise UsageError(
                f"{root}: not a directory (an OCI image layout is a directory, as `skopeo copy … oci:DIR` "
                "writes it)"
            )
        layout = os.path.join(root, LAYOUT_FILE)
        if not os.path.isfile(layout):
            raise UsageError(f"{root}: not an OCI image layout: no {LAYOUT_FILE} file")
        doc = self._load_json_file(layout, LAYOUT_FILE)
        if doc.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise FormatError(
                LAYOUT_FILE,
                f"imageLayoutVersion must be {LAYOUT_VERSION!r}",
                field="imageLayoutVersion",
                value=str(doc.get("imageLayoutVersion")),
                where=layout,
            )
        index_path = os.path.join(root, INDEX_FILE)
        if not os.path.isfile(index_path):
            raise UsageError(f"{root}: not an OCI image layout: no {INDEX_FILE}")
        with open(index_path, "rb") as f:
            self.index_bytes = f.read(MAX_JSON + 1)
        self.index = self._parse(self.index_bytes, INDEX_FILE, index_path)
        self._check_index(self.index, index_path)

    # -------------------------------------------------------------- blobs
    def blob_path(self, digest: object, what: str) -> str:
        m = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
        if m is None:
            raise UsageError(
                f"{self.root}: {what}: unsupported digest {digest!r} (only sha256:<64 hex> is supported)"
            )
        return os.path.join(self.root, "blobs", "sha256", m.group(1))

    def check_blob(self, desc: dict, what: str) -> str:
        """The blob file of ``desc``, after checking that it exists and has the descriptor's size and sha256."""
        path = self.blob_path(desc.get("digest"), what)
        size = desc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(
                "descriptor",
                f"{what}: size must be a non-negative integer",
                field="size",
                value=str(size),
                where=self.root,
            )
        if not os.path.isfile(path):
            raise UsageError(f"{self.root}: {what}: blob {desc['digest']} is missing (no {path})")
        real_size = os.path.getsize(path)
        if real_size != size:
            raise FormatError("blob", f"{what}: {real_size} bytes, the descriptor says {size}", where=path)
        got, _ = sha256_file(path)
        if f"sha256:{got}" != desc["digest"]:
            raise FormatError(
                "blob", f"{what}: sha256 is sha256:{got}, the descriptor says {desc['digest']}", where=path
            )
        return path

    def read_json(self, desc: dict, what: str) -> tuple[dict, bytes]:
        path = self.check_blob(desc, what)
        if desc["size"] > MAX_JSON:
            raise FormatError(
                "blob", f"{what}: {desc['size']} bytes is too large for a JSON document", where=path
            )
        with open(path, "rb") as f:
            raw = f.read()
        return self._parse(raw, what, path), raw

    @staticmethod
    def _parse(raw: bytes, what: str, where: str) -> dict:
        if len(raw) > MAX_JSON:
            raise FormatError(what, "too large for a JSON document", where=where)
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(what, f"not valid JSON: {exc}", where=where) from None
        if not isinstance(doc, dict):
            raise FormatError(what, "not a JSON object", where=where)
        return doc

    def _load_json_file(self, path: str, what: str) -> dict:
        with open(path, "rb") as f:
            return self._parse(f.read(MAX_JSON + 1), what, path)

    def _check_index(self, doc: dict, where: str) -> None:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
            raise FormatError(
                "image index", "manifests must be a list of descriptors", field="manifests", where=where
            )

    # -------------------------------------------------------------- images
    def images(self) -> Iterator[Image]:
        """Every image manifest reachable from index.json (through nested indexes), checked as it is read."""
        yield from self._images(self.index, [])

    def _images(self, index: dict, parents: list[dict]) -> Iterator[Image]:
        for i, desc in enumerate(index["manifests"]):
            mt = desc.get("mediaType")
            where = (
                f"{INDEX_FILE} manifests[{i}]"
                if not parents
                else f"index {parents[-1]['digest']} manifests[{i}]"
            )
            if is_index(mt):
                if any(p.get("digest") == desc.get("digest") for p in parents):
                    raise FormatError(
                        "image index", f"{where}: an index that contains itself", where=self.root
                    )
                sub, _ = self.read_json(desc, f"{where} (image index)")
                self._check_index(sub, self.blob_path(desc["digest"], where))
                yield from self._images(sub, [*parents, desc])
            elif is_manifest(mt):
                yield self.image(desc, parents, where)
            else:
                raise UsageError(
                    f"{self.root}: {where}: unsupported media type {mt!r} (expected an OCI or Docker "
                    "image manifest or index)"
                )

    def image(self, desc: dict, parents: list[dict], where: str) -> Image:
        manifest, _ = self.read_json(desc, f"{where} (manifest {desc.get('digest')})")
        mpath = self.blob_path(desc["digest"], where)
        if not isinstance(manifest.get("config"), dict):
            raise FormatError("image manifest", "no config descriptor", field="config", where=mpath)
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
            raise FormatError(
                "image manifest", "layers must be a list of descriptors", field="layers", where=mpath
            )
        config, _ = self.read_json(manifest["config"], f"config of manifest {desc['digest']}")
        platform = Platform.of(desc.get("platform")) or Platform.of(config)
        return Image(desc, manifest, config, platform, list(parents))


def select_images(images: list[Image], platforms: list[Platform] | None, where: str) -> list[Image]:
    """The images to work on: those matching ``platforms``; by default the only image, or the linux/amd64 ones."""
    if not images:
        raise UsageError(f"{where}: the layout holds no image manifest")
    if platforms is None:
        if len(images) == 1:
            return images
        platforms = [DEFAULT_PLATFORM]
    chosen = [
        im for im in images if im.platform is not None and any(p.matches(im.platform) for p in platforms)
    ]
    if not chosen:
        found = ", ".join(sorted({str(im.platform) for im in images if im.platform})) or "none stated"
        raise UsageError(
            f"{where}: no image for {', '.join(map(str, platforms))} (platforms here: {found}); "
            "pick one with --platform"
        )
    return chosen


def _one_image(root: str, platforms: list[Platform] | None) -> Image:
    images = select_images(list(OciLayout(root).images()), platforms, root)
    if len(images) > 1:
        names = ", ".join(f"{im.digest} ({im.platform})" for im in images)
        raise UsageError(f"{root}: holds several images ({names}); this command reads one")
    return images[0]


def nydus_image_of_layout(root: str, platforms: list[Platform] | None = None) -> tuple[Image, str]:
    """(the image, its bootstrap layer blob path, checked) of the one nydus image in the layout at ``root``."""
    image, descs, paths = readable_layers_of_layout(root, platforms)
    if is_erofs_layer(descs[0]):
        raise UsageError(f"{root}: image {image.digest} is an EROFS image, not a nydus image")
    assert paths[0] is not None
    return image, paths[0]


def readable_layers_of_layout(
    root: str, platforms: list[Platform] | None = None, by_frame: bool = False
) -> tuple[Image, list[dict], list[str | None]]:
    """(the image, the descriptors and the blob paths, checked, of the layers that hold its file system) of the
    one image in the layout at ``root``: a nydus image's bootstrap layer, or every layer of a containerd EROFS
    image (plain or seekable, :func:`is_erofs_layer`), lowest first, which overlay.LayerStack overlays as
    containerd's snapshotter mounts them. ``by_frame``: a layer the caller reads by frame
    (:func:`read_by_frame`) is not looked for in the layout (path None)."""
    layout = OciLayout(root)
    image = _one_image(root, platforms)
    layers = image.manifest["layers"]
    boot = next((d for d in reversed(layers) if is_nydus_bootstrap(d)), None)
    if boot is not None:
        return image, [boot], [layout.check_blob(boot, f"bootstrap layer of manifest {image.digest}")]
    if layers and all(is_erofs_layer(d) for d in layers):
        paths: list[str | None] = []
        for i, desc in enumerate(layers):
            which = f"EROFS layer {i + 1} of {len(layers)}" if len(layers) > 1 else "EROFS layer"
            by_range = by_frame and read_by_frame(desc)
            paths.append(None if by_range else layout.check_blob(desc, f"{which} of manifest {image.digest}"))
        return image, list(layers), paths
    raise UsageError(
        f"{root}: image {image.digest} is not a nydus image (no layer annotated "
        f"{ANNOTATION_NYDUS_BOOTSTRAP}) nor an EROFS image; convert it first with `nydus-inspect convert`"
    )


__all__ = [
    "ANNOTATION_FS_VERSION",
    "ANNOTATION_NYDUS_BLOB",
    "ANNOTATION_NYDUS_BOOTSTRAP",
    "ANNOTATION_UNCOMPRESSED",
    "NYDUS_BLOB",
    "OS_FEATURE_NYDUS",
    "Image",
    "OciLayout",
    "Platform",
    "is_erofs_layer",
    "is_nydus_image",
    "read_by_frame",
    "readable_layers_of_layout",
    "select_images",
]
