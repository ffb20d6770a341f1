"""convert --to erofs: an OCI image's tar layers as EROFS layers, as containerd's EROFS converter writes them.

Each tar layer becomes one plain EROFS image (:func:`.erofs_write.pack_erofs`, with containerd's options and
its filesystem UUID derived from the layer's diff ID), media type ``application/vnd.erofs.layer.v1``; with
dm-verity, the payload is appended and the layer descriptor carries the seed converter's annotations
(``dev.containerd.erofs.dmverity.root_digest`` = ``sha256:<root hash>``, ``….offset`` = where the payload
starts). The config's ``rootfs.diff_ids`` become the EROFS blobs' digests (the blobs are not compressed, so
each is its own uncompressed digest, as containerd's converter records), and ``erofs`` is added to the
platform's and the config's ``os.features`` (``UpdateManifestPlatform``). Layers already EROFS are kept.

With ``seekable`` (containerd's ``--erofs-seekable``), each tar layer becomes a seekable EROFS layer instead
(:mod:`.seekable_write`: media type ``application/vnd.erofs.layer.v1+zstd``, the chunk table and dm-verity
annotations), and so does each plain EROFS layer, framed as it is, as that converter does; seekable layers
are kept. A seekable layer's diff ID is the sha256 of the image inside (what decompressing it gives), the
``containerd.io/uncompressed`` label that converter records. A kept layer keeps the diff ID it had.
"""

from __future__ import annotations

import logging
import os

from .convert import ImageResult, _Converter, _pstr
from .erofs_write import MEDIA_TYPE, ErofsOptions, containerd_uuid, pack_erofs
from .errors import UsageError
from .oci import TAR_LAYER_TYPES, Image, dumps, is_erofs_layer
from .seekable_write import MEDIA_TYPE as SEEKABLE_MEDIA_TYPE
from .seekable_write import SeekableOptions, pack_seekable, seekable_from_image

log = logging.getLogger(__name__)

OS_FEATURE_EROFS = "erofs"


class ErofsConverter(_Converter):
    def __init__(
        self, src, out, opts, progress, erofs: ErofsOptions, seekable: SeekableOptions | None = None
    ) -> None:
        super().__init__(src, out, opts, progress)
        self.erofs = erofs
        self.seekable = seekable

    def image(self, image: Image) -> dict | None:
        if image.digest in self.done:
            return self.done[image.digest]
        manifest = image.manifest
        config = dict(image.config)
        rootfs = dict(config.get("rootfs") or {"type": "layers"})
        diff_ids = list(rootfs.get("diff_ids") or [])
        descs = []
        new_diff_ids = []
        for i, desc in enumerate(manifest["layers"]):
            what = f"layer {i} of manifest {image.digest}"
            diff_id = diff_ids[i] if i < len(diff_ids) else desc["digest"]
            if is_erofs_layer(desc) and not (self.seekable and desc.get("mediaType") == MEDIA_TYPE):
                self.out.copy(self.src.check_blob(desc, what), desc["digest"])
                descs.append(desc)
                new_diff_ids.append(diff_id)
                continue
            if not is_erofs_layer(desc) and desc.get("mediaType") not in TAR_LAYER_TYPES:
                raise UsageError(
                    f"{self.src.root}: {what}: unsupported layer media type {desc.get('mediaType')!r} "
                    "(expected an OCI or Docker tar layer, plain, gzip or zstd)"
                )
            new_desc, new_diff_id = self._layer(desc, diff_id, what)
            descs.append(new_desc)
            new_diff_ids.append(new_diff_id)
        rootfs["diff_ids"] = new_diff_ids
        config["rootfs"] = rootfs
        features = list(config.get("os.features") or [])
        if OS_FEATURE_EROFS not in features:
            features.append(OS_FEATURE_EROFS)
        config["os.features"] = features
        cfg_digest, cfg_size = self.out.put(dumps(config))
        new_manifest = {
            **manifest,
            "config": {**manifest["config"], "digest": cfg_digest, "size": cfg_size},
            "layers": descs,
        }
        digest, size = self.out.put(dumps(new_manifest))
        plat = self._platform(image)
        plat["os.features"] = [f for f in plat["os.features"] if f != "nydus.remoteimage.v1"]
        if OS_FEATURE_EROFS not in plat["os.features"]:
            plat["os.features"].append(OS_FEATURE_EROFS)
        new_desc = {**image.desc, "digest": digest, "size": size, "platform": plat}
        self.done[image.digest] = new_desc
        self.results.append(
            ImageResult(
                image.digest,
                digest,
                _pstr(image.platform),
                True,
                len(manifest["layers"]),
                [d["digest"] for d in descs],
            )
        )
        return new_desc

    def _layer(self, desc: dict, diff_id: str, what: str) -> tuple[dict, str]:
        """The new descriptor of layer ``desc`` and its diff ID."""
        key = desc["digest"]
        cached = self.packed.get(key)
        if cached is None:
            src_path = self.src.check_blob(desc, what)
            tmp = os.path.join(self.out.blobs, f".erofs-{len(self.packed)}")
            opts = ErofsOptions(
                dm_verity=self.erofs.dm_verity,
                verity_superblock=self.erofs.verity_superblock,
                salt=self.erofs.salt,
                inline_data=self.erofs.inline_data,
                compression=self.erofs.compression,
                uuid=containerd_uuid(diff_id),
            )
            if self.progress is not None:
                base, report = self.consumed, self.progress
                opts.progress = lambda n: report(base + n)
            log.info("packing %s (%s) as %sEROFS", what, key, "seekable " if self.seekable else "")
            try:
                if self.seekable is None:
                    res = pack_erofs(src_path, tmp, opts)
                    cached = (res.digest, res.size, res.annotations(), MEDIA_TYPE, f"sha256:{res.digest}")
                else:
                    if is_erofs_layer(desc):  # a plain EROFS layer: its blob is the image to frame
                        sres = seekable_from_image(src_path, tmp, self.seekable)
                    else:
                        sres = pack_seekable(src_path, tmp, self.seekable, opts)
                    cached = (sres.digest, sres.size, sres.annotations(), SEEKABLE_MEDIA_TYPE, sres.diff_id)
            except UsageError as exc:
                raise UsageError(f"{what} ({key}): {exc}") from None
            self.consumed += desc.get("size", 0)
            os.replace(tmp, self.out.path(cached[0]))
            self.out.referenced.add(cached[0])
            self.packed[key] = cached
        hx, size, annotations, media_type, new_diff_id = cached
        self.out.referenced.add(hx)
        out = {"mediaType": media_type, "digest": f"sha256:{hx}", "size": size}
        if annotations:
            out["annotations"] = dict(sorted(annotations.items()))
        return out, new_diff_id
