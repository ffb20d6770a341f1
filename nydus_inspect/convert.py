"""convert: an OCI image layout -> a nydus image in a new OCI image layout, as the nydus snapshotter's
converter writes it (``LayerConvertFunc``, ``MergeLayers``, ``convertManifest``, ``convertIndex``).

Each OCI layer (plain, gzip or zstd tar; OCI or Docker media types) is packed into a nydus layer blob
named by its sha256; the blobs are merged into one bootstrap, which becomes the image's last layer
(``image/image.boot`` in a tar+gzip). Then:

* manifest layers: the blobs the merged bootstrap's table lists, in its order (a layer whose files were all
  whited out, or that held no file data, has no blob and drops out), each with media type
  ``application/vnd.oci.image.layer.nydus.blob.v1`` and ``containerd.io/snapshot/nydus-blob=true``; then the
  bootstrap layer with ``containerd.io/snapshot/nydus-bootstrap=true`` and ``…/nydus-fs-version=6``, media
  type tar+gzip (OCI for an OCI manifest, Docker's for a Docker one);
* config: ``rootfs.diff_ids`` = each layer's uncompressed digest (a blob's own digest; the bootstrap tar's
  sha256), and one history entry appended for the bootstrap layer. The ``containerd.io/uncompressed``
  annotations that carried those digests are removed from the manifest afterwards, as the seed does;
* index: each converted manifest's descriptor gets ``nydus.remoteimage.v1`` in ``platform.os.features``;
  manifests of platforms not chosen are dropped; a nested index left with one manifest collapses into it.

An image whose last layer is already a nydus bootstrap is copied through unchanged, so converting a
converted layout again gives the same bytes. The output is written to a temporary directory beside the
target and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UsageError
from .layer import Layer, open_layer
from .merge import bootstrap_layer, merge_bootstrap
from .oci import (
    ANNOTATION_FS_VERSION,
    ANNOTATION_NYDUS_BLOB,
    ANNOTATION_NYDUS_BOOTSTRAP,
    ANNOTATION_UNCOMPRESSED,
    DOCKER_LAYER_GZIP,
    INDEX_FILE,
    LAYOUT_FILE,
    NYDUS_BLOB,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    OS_FEATURE_NYDUS,
    TAR_LAYER_TYPES,
    Image,
    OciLayout,
    Platform,
    dumps,
    is_index,
    is_nydus_blob,
    is_nydus_bootstrap,
    is_nydus_image,
    select_images,
)
from .pack import PackOptions, pack

log = logging.getLogger(__name__)

FS_VERSION = "6"
BOOTSTRAP_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}


@dataclass
class ImageResult:
    """One image of a conversion: its manifest digest before and after, and what became of it."""

    source: str  # the manifest's digest in the input
    target: str  # and in the output (the same when copied through)
    platform: str | None
    converted: bool
    layers: int = 0  # layers of the source manifest
    blobs: list[str] = field(default_factory=list)  # nydus blob digests the new manifest lists
    bootstrap: str | None = None  # the bootstrap layer's digest

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "platform": self.platform,
            "converted": self.converted,
            "layers": self.layers,
            "blobs": self.blobs,
            "bootstrap": self.bootstrap,
        }


@dataclass
class ConvertResult:
    """What ``convert`` wrote: the output layout and each image in it."""

    output: str
    images: list[ImageResult] = field(default_factory=list)
    changed: bool = True  # False: the layout was copied through (already nydus)

    def to_json(self) -> dict:
        return {
            "output": self.output,
            "changed": self.changed,
            "images": [im.to_json() for im in self.images],
        }


def _platforms(values: list[str] | None) -> list[Platform] | None | str:
    if not values:
        return None
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if "all" in items:
        return "all"
    return [Platform.parse(v) for v in items]


def _sorted(d: dict[str, str]) -> dict[str, str]:
    """Annotations as Go's encoder writes a map: keys sorted."""
    return dict(sorted(d.items()))


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


class _Writer:
    """The output layout being written in a temporary directory."""

    def __init__(self, tmp: str) -> None:
        self.root = tmp
        self.blobs = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(self.blobs)
        self.referenced: set[str] = set()

    def path(self, hex_digest: str) -> str:
        return os.path.join(self.blobs, hex_digest)

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` as a blob; ("sha256:…", size)."""
        hx = hashlib.sha256(data).hexdigest()
        path = self.path(hx)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        self.referenced.add(hx)
        return f"sha256:{hx}", len(data)

    def copy(self, src_path: str, digest: str) -> None:
        hx = _hex(digest)
        path = self.path(hx)
        if not os.path.exists(path):
            shutil.copyfile(src_path, path + ".tmp")
            os.replace(path + ".tmp", path)
        self.referenced.add(hx)

    def drop_unreferenced(self) -> None:
        for name in os.listdir(self.blobs):
            if name not in self.referenced:
                os.unlink(os.path.join(self.blobs, name))


class _Converter:
    def __init__(
        self, src: OciLayout, out: _Writer, opts: PackOptions, progress: Callable[[int], None] | None
    ):
        self.src = src
        self.out = out
        self.opts = opts
        self.progress = progress
        self.consumed = 0
        self.packed: dict[str, tuple[str, int]] = {}  # source layer digest -> (blob hex digest, size)
        self.done: dict[str, dict | None] = {}  # manifest digest -> new descriptor (None: unchanged)
        self.results: list[ImageResult] = []

    # -------------------------------------------------------------- index level (convertIndex)
    def index(
        self, doc: dict, parents: list[dict], chosen: dict[tuple[str, ...], Image]
    ) -> tuple[dict, bool]:
        """The rewritten index ``doc`` and whether anything in it changed."""
        manifests: list[dict] = []
        changed = False
        chain = tuple(p["digest"] for p in parents)
        for desc in doc["manifests"]:
            if is_index(desc.get("mediaType")):
                sub, _ = self.src.read_json(desc, f"image index {desc.get('digest')}")
                new_sub, sub_changed = self.index(sub, [*parents, desc], chosen)
                if not sub_changed:
                    self.out.copy(self.src.blob_path(desc["digest"], "image index"), desc["digest"])
                    manifests.append(desc)
                    continue
                changed = True
                if not new_sub["manifests"]:
                    continue  # no chosen platform below
                if len(new_sub["manifests"]) == 1:
                    # The seed returns a one-manifest index as that manifest.
                    only = dict(new_sub["manifests"][0])
                    if desc.get("annotations"):
                        only["annotations"] = _sorted(
                            {**(only.get("annotations") or {}), **desc["annotations"]}
                        )
                    manifests.append(only)
                    continue
                digest, size = self.out.put(dumps(new_sub))
                manifests.append({**desc, "digest": digest, "size": size})
                continue
            image = chosen.get((*chain, desc.get("digest", "")))
            if image is None:
                changed = True  # a platform not chosen: dropped, as containerd's converter does
                continue
            new_desc = self.image(image)
            if new_desc is None:
                manifests.append(desc)
            else:
                manifests.append(new_desc)
                changed = True
        return {**doc, "manifests": manifests}, changed

    # -------------------------------------------------------------- manifest level (convertManifest)
    def image(self, image: Image) -> dict | None:
        """Convert one image; its new manifest descriptor, or None when it is already nydus (copied through)."""
        if image.digest in self.done:
            return self.done[image.digest]
        manifest = image.manifest
        if is_nydus_image(manifest):
            self._copy_through(image)
            self.done[image.digest] = None
            self.results.append(
                ImageResult(image.digest, image.digest, _pstr(image.platform), False, len(manifest["layers"]))
            )
            return None
        blob_paths, digests = self._blobs(image)
        layers: list[Layer] = []
        try:
            for p in blob_paths:
                layers.append(open_layer(p))
            merged = merge_bootstrap(layers, own_blob_id=lambda layer: digests[layer.path])
        finally:
            for layer in layers:
                layer.close()
        blob_ids = [b.blob_id.decode() for b in merged.blobs]
        descs = []
        for bid in blob_ids:
            if not os.path.exists(self.out.path(bid)):
                # A blob another layer's bootstrap refers to (a chunk dict): it must be in the input layout.
                path = self.src.blob_path(f"sha256:{bid}", f"blob {bid} of manifest {image.digest}")
                if not os.path.isfile(path):
                    raise UsageError(
                        f"{self.src.root}: the layers of manifest {image.digest} use blob {bid}, "
                        "which is not in the layout"
                    )
                self.out.copy(path, f"sha256:{bid}")
            self.out.referenced.add(bid)
            descs.append(
                {
                    "mediaType": NYDUS_BLOB,
                    "digest": f"sha256:{bid}",
                    "size": os.path.getsize(self.out.path(bid)),
                    "annotations": _sorted(
                        {ANNOTATION_UNCOMPRESSED: f"sha256:{bid}", ANNOTATION_NYDUS_BLOB: "true"}
                    ),
                }
            )
        # The bootstrap layer: image/image.boot in a tar, gzip-compressed (merge.bootstrap_layer(gz=True)).
        tar = bootstrap_layer(merged.boot)
        boot_digest, boot_size = self.out.put(gzip.compress(tar, mtime=0))
        oci = image.desc.get("mediaType") == OCI_MANIFEST
        descs.append(
            {
                "mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP,
                "digest": boot_digest,
                "size": boot_size,
                "annotations": _sorted(
                    {
                        ANNOTATION_UNCOMPRESSED: f"sha256:{hashlib.sha256(tar).hexdigest()}",
                        ANNOTATION_FS_VERSION: FS_VERSION,
                        ANNOTATION_NYDUS_BOOTSTRAP: "true",
                    }
                ),
            }
        )
        # Config: diff ids from the layers' uncompressed digests, which then leave the manifest.
        config = dict(image.config)
        rootfs = dict(config.get("rootfs") or {"type": "layers"})
        rootfs["diff_ids"] = [d["annotations"][ANNOTATION_UNCOMPRESSED] for d in descs]
        config["rootfs"] = rootfs
        config["history"] = [*(config.get("history") or []), dict(BOOTSTRAP_HISTORY)]
        for d in descs:
            d["annotations"] = {k: v for k, v in d["annotations"].items() if k != ANNOTATION_UNCOMPRESSED}
        cfg_digest, cfg_size = self.out.put(dumps(config))
        new_manifest = {
            **manifest,
            "config": {**manifest["config"], "digest": cfg_digest, "size": cfg_size},
            "layers": descs,
        }
        digest, size = self.out.put(dumps(new_manifest))
        new_desc = {**image.desc, "digest": digest, "size": size, "platform": self._platform(image)}
        self.done[image.digest] = new_desc
        self.results.append(
            ImageResult(
                image.digest,
                digest,
                _pstr(image.platform),
                True,
                len(manifest["layers"]),
                [f"sha256:{b}" for b in blob_ids],
                boot_digest,
            )
        )
        return new_desc

    def _platform(self, image: Image) -> dict:
        """The descriptor's platform (or the config's), with the nydus OS feature added."""
        plat = dict(image.desc.get("platform") or {})
        if not plat:
            cfg = image.config
            for key in ("architecture", "os", "os.version", "variant"):
                if cfg.get(key):
                    plat[key] = cfg[key]
        features = list(plat.get("os.features") or [])
        if OS_FEATURE_NYDUS not in features:
            features.append(OS_FEATURE_NYDUS)
        plat["os.features"] = features
        order = ("architecture", "os", "os.version", "os.features", "variant")
        return {
            **{k: plat[k] for k in order if k in plat},
            **{k: v for k, v in plat.items() if k not in order},
        }

    def _copy_through(self, image: Image) -> None:
        what = f"manifest {image.digest}"
        self.out.copy(self.src.check_blob(image.desc, what), image.digest)
        cfg = image.manifest["config"]
        self.out.copy(self.src.check_blob(cfg, f"config of {what}"), cfg["digest"])
        for i, d in enumerate(image.manifest["layers"]):
            self.out.copy(self.src.check_blob(d, f"layer {i} of {what}"), d["digest"])

    # -------------------------------------------------------------- layers (LayerConvertFunc)
    def _blobs(self, image: Image) -> tuple[list[str], dict[str, str]]:
        """Each layer as a nydus blob in the output: (paths lowest first, path -> blob hex digest)."""
        paths: list[str] = []
        digests: dict[str, str] = {}
        layers = image.manifest["layers"]
        for i, desc in enumerate(layers):
            what = f"layer {i} of manifest {image.digest}"
            mt = desc.get("mediaType")
            if is_nydus_bootstrap(desc):
                raise UsageError(
                    f"{self.src.root}: {what} is a nydus bootstrap but not the last layer; "
                    "cannot convert a half-converted image"
                )
            if is_nydus_blob(desc):
                src_path = self.src.check_blob(desc, what)
                self.out.copy(src_path, desc["digest"])
                hx = _hex(desc["digest"])
            elif mt in TAR_LAYER_TYPES:
                hx = self._pack(desc, what)
            else:
                raise UsageError(
                    f"{self.src.root}: {what}: unsupported layer media type {mt!r} (expected an OCI "
                    "or Docker tar layer, plain, gzip or zstd)"
                )
            path = self.out.path(hx)
            paths.append(path)
            digests[path] = hx
        return paths, digests

    def _pack(self, desc: dict, what: str) -> str:
        cached = self.packed.get(desc["digest"])
        if cached is not None:
            return cached[0]
        src_path = self.src.check_blob(desc, what)
        tmp = os.path.join(self.out.blobs, f".pack-{len(self.packed)}")
        opts = PackOptions(
            compressor=self.opts.compressor,
            digester=self.opts.digester,
            chunk_size=self.opts.chunk_size,
            workers=self.opts.workers,
        )
        if self.progress is not None:
            base, report = self.consumed, self.progress
            opts.progress = lambda n: report(base + n)
        log.info("packing %s (%s)", what, desc["digest"])
        try:
            res = pack(src_path, tmp, opts)
        except UsageError as exc:
            raise UsageError(f"{what} ({desc['digest']}): {exc}") from None
        self.consumed += desc.get("size", 0)
        os.replace(tmp, self.out.path(res.digest))
        self.packed[desc["digest"]] = (res.digest, res.size)
        return res.digest


def _pstr(p: Platform | None) -> str | None:
    return str(p) if p is not None else None


def convert(
    source: str,
    output: str,
    *,
    platforms: list[str] | None = None,
    options: PackOptions | None = None,
    progress: Callable[[int], None] | None = None,
    erofs=None,
    seekable=None,
) -> ConvertResult:
    """Convert the OCI image layout ``source`` into a nydus image in the new layout ``output``.

    ``platforms``: "os/arch[/variant]" strings (or "all"); by default the only image, or linux/amd64.
    ``erofs``: an :class:`.erofs_write.ErofsOptions` for a containerd EROFS image instead
    (:mod:`.erofs_convert`); with ``seekable`` (:class:`.seekable_write.SeekableOptions`) too, its layers
    are seekable EROFS layers.
    """
    opts = options or PackOptions()
    opts.check()
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise UsageError(f"{output}: already exists; give a new directory (or an empty one)")
    if os.path.exists(output) and os.path.samefile(source, output):
        raise UsageError(f"{output}: the output must differ from the input layout")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"{output}: directory {parent} does not exist")
    src = OciLayout(source)
    wanted = _platforms(platforms)
    images = list(src.images())
    if not images:
        raise UsageError(f"{source}: the layout holds no image manifest")
    chosen_list = images if wanted == "all" else select_images(images, wanted, source)  # type: ignore[arg-type]
    chosen = {(*(p["digest"] for p in im.parents), im.digest): im for im in chosen_list}
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output))}.", suffix=".tmp", dir=parent)
    try:
        writer = _Writer(tmp)
        if erofs is not None:
            from .erofs_convert import ErofsConverter

            conv = ErofsConverter(src, writer, opts, progress, erofs, seekable)
        else:
            conv = _Converter(src, writer, opts, progress)
        new_index, changed = conv.index(src.index, [], chosen)
        index_bytes = dumps(new_index) if changed else src.index_bytes
        with open(os.path.join(tmp, INDEX_FILE), "wb") as f:
            f.write(index_bytes)
        shutil.copyfile(os.path.join(source, LAYOUT_FILE), os.path.join(tmp, LAYOUT_FILE))  # version checked
        writer.drop_unreferenced()
        os.chmod(tmp, 0o755)
        if os.path.isdir(output):
            os.rmdir(output)  # empty, checked above
        os.rename(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return ConvertResult(output, conv.results, changed)


__all__ = ["ConvertResult", "ImageResult", "convert"]
