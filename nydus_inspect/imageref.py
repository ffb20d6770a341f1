"""Image references: where an image lives, and how to bring what a command needs of it into a local OCI layout.

The forms, as skopeo spells them: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` (a registry, through
:mod:`.registry`), ``oci:DIR[:REF]`` (an OCI layout, REF picking a ``org.opencontainers.image.ref.name``),
``oci-archive:PATH[:REF]`` (an OCI layout in a tar) and ``docker-archive:PATH`` (``docker save``). A plain
path is left as it is, so every existing LAYER argument means what it meant.

Every form is materialised as an OCI layout under the cache directory, so the commands keep reading one thing
(:class:`.oci.OciLayout`, which checks each blob against its digest). Blobs live once in ``blobs/sha256``
of the cache; a layout there is ``index.json`` + ``oci-layout`` + a ``blobs`` link to that store. Registry
blobs are fetched only when asked for: manifests and configs always, then either every layer of the chosen
images or, for commands that read only metadata, just the nydus bootstrap layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import UsageError
from .oci import (
    ANNOTATION_NYDUS_BOOTSTRAP,
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    INDEX_FILE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    MAX_JSON,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OciLayout,
    Platform,
    dumps,
    is_index,
    is_manifest,
    is_nydus_bootstrap,
    read_by_frame,
    select_images,
)

if TYPE_CHECKING:
    from .registry import Credentials, Registry, Stats

# The registry client (httpx) and the archive readers are imported when a reference needs them: commands on
# plain files pay nothing for them.
PREFIXES = ("docker://", "oci:", "oci-archive:", "docker-archive:")
REF_NAME = "org.opencontainers.image.ref.name"
_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class Ref:
    kind: str  # "docker", "oci", "oci-archive", "docker-archive"
    path: str = ""  # oci / archives
    name: str | None = None  # oci / oci-archive: the ref.name to pick
    host: str = ""
    repo: str = ""
    reference: str = ""  # tag or digest

    def __str__(self) -> str:
        if self.kind == "docker":
            sep = "@" if self.reference.startswith("sha256:") else ":"
            return f"docker://{self.host}/{self.repo}{sep}{self.reference}"
        return f"{self.kind}:{self.path}" + (f":{self.name}" if self.name else "")


def is_reference(text: str) -> bool:
    return isinstance(text, str) and text.startswith(PREFIXES)


def parse(text: str) -> Ref:
    """A reference, with what is wrong named when it cannot be one."""
    if text.startswith("docker://"):
        rest = text[len("docker://") :]
        host, slash, path = rest.partition("/")
        if not slash or not host or not path:
            raise UsageError(f"{text}: expected docker://HOST[:PORT]/REPO[:TAG|@DIGEST]")
        if "@" in path:
            repo, _, reference = path.partition("@")
            if not _DIGEST.fullmatch(reference):
                raise UsageError(f"{text}: digest {reference!r} is not sha256:<64 hex>")
        else:
            repo, colon, reference = path.rpartition(":")
            if not colon or "/" in reference:
                repo, reference = path, "latest"
            elif not _TAG.fullmatch(reference):
                raise UsageError(f"{text}: tag {reference!r} is not a valid tag")
        if not _REPO.fullmatch(repo):
            raise UsageError(f"{text}: repository {repo!r} is not a valid name (lower case, digits, . _ - /)")
        return Ref("docker", host=host, repo=repo, reference=reference)
    for kind in ("oci-archive", "docker-archive", "oci"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1 :]
            if not rest:
                raise UsageError(f"{text}: no path after {kind}:")
            name = None
            if kind != "docker-archive" and not os.path.exists(rest) and ":" in rest:
                rest, name = rest.rsplit(":", 1)
            return Ref(kind, path=rest, name=name or None)
    raise UsageError(f"{text}: not an image reference (expected one of {', '.join(PREFIXES)})")


def absolute(text: str) -> str:
    """``text`` with any local path in it made absolute (a daemon that leaves the directory still finds it)."""
    if not is_reference(text):
        return os.path.abspath(text)
    ref = parse(text)
    if ref.kind == "docker":
        return text
    return f"{ref.kind}:{os.path.abspath(ref.path)}" + (f":{ref.name}" if ref.name else "")


def _registry():
    from . import registry

    return registry


# ---------------------------------------------------------------------------- options
def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nydus-inspect", "images")


@dataclass
class ImageOptions:
    cache_dir: str = field(default_factory=default_cache_dir)
    platforms: list[Platform] | None = None
    creds: Credentials | None = None
    insecure: bool = False
    all_platforms: bool = False
    data: bool = True  # fetch data layers too (False: manifests, configs and the nydus bootstrap only)
    stats: Stats | None = None  # made with the first registry session
    timeout: float = 30.0  # seconds without an answer before a registry request is retried
    chunk_dir: str | None = None  # the persistent chunk cache (default: chunks.store.default_dir())
    chunk_limit: int | None = None  # its bound in bytes (default: chunks.store.DEFAULT_LIMIT)


#: The options references are resolved with; the command line sets them from its flags.
OPTIONS = ImageOptions()


def add_arguments(p, platform: bool = True, stats: bool = True) -> None:
    """The flags every command taking an image reference has."""
    g = p.add_argument_group("image references (docker://, oci:, oci-archive:, docker-archive:)")
    if platform:
        g.add_argument(
            "--platform", action="append", metavar="OS/ARCH[/VARIANT]", help="image of a multi-arch index"
        )
    g.add_argument(
        "--creds", metavar="USER:PASS", help="registry credentials (default: ~/.docker/config.json)"
    )
    g.add_argument("--insecure", action="store_true", help="plain HTTP to a registry that is not localhost")
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where fetched images (DIR/) and checked chunks of lazily read blobs (DIR/chunks/) are kept "
        "(default: $XDG_CACHE_HOME/nydus-inspect/images and …/chunks)",
    )
    g.add_argument(
        "--cache-limit",
        metavar="SIZE",
        help="bound of the chunk cache on disk (default 4G; the oldest chunks go first)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="a registry request without an answer for this long is retried (default 30)",
    )
    if stats:
        g.add_argument(
            "--stats",
            action="store_true",
            help="say on stderr how many bytes were fetched (of how many lazily read) and pushed",
        )


def configure(args) -> None:
    """Set :data:`OPTIONS` from parsed command-line flags (those :func:`add_arguments` adds)."""
    given = getattr(args, "cache_dir", None)
    OPTIONS.cache_dir = given or default_cache_dir()
    if given:
        OPTIONS.cache_dir = os.path.abspath(given)  # a mount daemon leaves the working directory
    OPTIONS.chunk_dir = os.path.join(OPTIONS.cache_dir, "chunks") if given else None
    limit = getattr(args, "cache_limit", None)
    if limit is not None:
        from .units import parse_size

        OPTIONS.chunk_limit = parse_size(limit, "--cache-limit")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and getattr(args, "command", None) != "umount":
        if not timeout > 0:
            raise UsageError("--timeout: expected a number of seconds above 0")
        OPTIONS.timeout = timeout
    values = getattr(args, "platform", None)
    OPTIONS.all_platforms = bool(values) and "all" in values
    OPTIONS.platforms = [Platform.parse(v) for v in values] if values and not OPTIONS.all_platforms else None
    creds = getattr(args, "creds", None)
    OPTIONS.creds = _registry().Credentials.parse(creds) if creds else None
    OPTIONS.insecure = bool(getattr(args, "insecure", False))
    OPTIONS.data = bool(getattr(args, "image_data", True))


def stats_line() -> str:
    s = OPTIONS.stats or _registry().Stats()
    lazy = f" ({s.blob_fetched} of {s.blob_bytes} bytes of lazily read blobs)" if s.blob_bytes else ""
    return (
        f"registry: fetched {s.fetched} bytes{lazy}, pushed {s.pushed} bytes in {s.requests} requests "
        f"({s.retries} retries)"
    )


# ---------------------------------------------------------------------------- the cache
class _Store:
    def __init__(self, cache_dir: str) -> None:
        self.root = cache_dir
        self.blobs = os.path.join(cache_dir, "blobs", "sha256")
        try:
            os.makedirs(self.blobs, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{cache_dir}: cannot create the image cache: {exc.strerror}") from None

    def path(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest or ""):
            raise UsageError(f"unsupported digest {digest!r} (only sha256:<64 hex> is supported)")
        return os.path.join(self.blobs, digest.split(":", 1)[1])

    def has(self, desc: dict) -> bool:
        p = self.path(desc["digest"])
        return os.path.isfile(p) and os.path.getsize(p) == desc.get("size")

    def put_bytes(self, raw: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        p = self.path(digest)
        if not os.path.isfile(p):
            _write_atomic(p, raw)
        return digest

    def put_file(self, src: str) -> tuple[str, int]:

        h = hashlib.sha256()
        with open(src, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        digest = "sha256:" + h.hexdigest()
        dst = self.path(digest)
        if not os.path.isfile(dst):
            import shutil

            tmp = f"{dst}.{os.getpid()}.part"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return digest, os.path.getsize(dst)

    def layout(self, key: str, index: dict) -> str:
        """A layout directory named ``key`` whose index.json is ``index`` and whose blobs are the store's."""
        root = os.path.join(self.root, "layouts", key)
        os.makedirs(root, exist_ok=True)
        link = os.path.join(root, "blobs")
        if not os.path.islink(link):
            os.symlink(os.path.relpath(os.path.join(self.root, "blobs"), root), link)
        _write_atomic(os.path.join(root, LAYOUT_FILE), dumps({"imageLayoutVersion": LAYOUT_VERSION}))
        _write_atomic(os.path.join(root, INDEX_FILE), dumps(index))
        return root


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------- materialising
def materialise(text: str, options: ImageOptions | None = None) -> str:
    """An OCI layout directory holding what the commands need of the image ``text`` (a reference; a plain
    path is returned as it is)."""
    if not is_reference(text):
        return text
    opts = options or OPTIONS
    ref = parse(text)
    store = _Store(opts.cache_dir)
    if ref.kind == "docker":
        return _from_registry(ref, store, opts)
    if ref.kind == "oci":
        return _view(ref.path, ref.name, store, text)
    if ref.kind == "oci-archive":
        return _view(_extract(ref.path, store, text), ref.name, store, text)
    return _from_docker_archive(ref.path, store, text)


def _view(root: str, name: str | None, store: _Store, text: str) -> str:
    """The layout at ``root``, narrowed to the images named ``name`` when one is given."""
    layout = OciLayout(root)
    if name is None:
        return root
    picked = [d for d in layout.index["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == name]
    if not picked:
        names = sorted(
            {(d.get("annotations") or {}).get(REF_NAME, "") for d in layout.index["manifests"]} - {""}
        )
        raise UsageError(
            f"{text}: no image named {name!r} in {root} (names there: {', '.join(names) or 'none'})"
        )
    key = os.path.join("oci", _key(os.path.realpath(root), name))
    dst = os.path.join(store.root, "layouts", key)
    os.makedirs(dst, exist_ok=True)
    link = os.path.join(dst, "blobs")
    if not os.path.islink(link):
        os.symlink(os.path.realpath(os.path.join(root, "blobs")), link)
    _write_atomic(os.path.join(dst, LAYOUT_FILE), dumps({"imageLayoutVersion": LAYOUT_VERSION}))
    _write_atomic(os.path.join(dst, INDEX_FILE), dumps({**layout.index, "manifests": picked}))
    return dst


def _extract(path: str, store: _Store, text: str) -> str:
    """The tar ``path`` unpacked once into the cache (keyed by its path, size and mtime); only plain files
    and directories, never outside the target."""
    import gzip
    import shutil
    import tarfile
    import tempfile

    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{text}: {path}: {exc.strerror}") from None
    dst = os.path.join(
        store.root, "archives", _key(os.path.realpath(path), str(st.st_size), str(st.st_mtime_ns))
    )
    if os.path.isdir(dst):
        return dst
    tmp = tempfile.mkdtemp(
        prefix=".extract.",
        dir=os.path.dirname(dst) if os.path.isdir(os.path.dirname(dst)) else _mk(os.path.dirname(dst)),
    )
    try:
        try:
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    name = os.path.normpath(member.name.lstrip("/"))
                    if name.startswith("..") or name == ".":
                        continue
                    if member.isdir():
                        os.makedirs(os.path.join(tmp, name), exist_ok=True)
                    elif member.isfile():
                        out = os.path.join(tmp, name)
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        with tf.extractfile(member) as src, open(out, "wb") as f:
                            shutil.copyfileobj(src, f, 1 << 20)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
            raise UsageError(f"{text}: {path} is not a readable tar archive ({exc})") from None
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(dst):
            return dst  # another process got there first
        raise
    return dst


def _mk(d: str) -> str:
    os.makedirs(d, exist_ok=True)
    return d


def _from_docker_archive(path: str, store: _Store, text: str) -> str:
    """A ``docker save`` tarball as an OCI layout: its config and layer files become blobs named by digest."""
    raw = _extract(path, store, text)
    try:
        with open(os.path.join(raw, "manifest.json"), "rb") as f:
            entries = json.load(f)
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ValueError("not a list of images")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{text}: no usable manifest.json in the archive ({exc})") from None
    descs = []
    for i, entry in enumerate(entries):
        try:
            config_path = os.path.join(raw, os.path.normpath(entry["Config"]))
            layer_paths = [os.path.join(raw, os.path.normpath(p)) for p in entry["Layers"]]
        except (KeyError, TypeError):
            raise UsageError(f"{text}: manifest.json[{i}] lacks Config or Layers") from None
        for p in (config_path, *layer_paths):
            if not os.path.realpath(p).startswith(os.path.realpath(raw) + os.sep) or not os.path.isfile(p):
                raise UsageError(
                    f"{text}: manifest.json[{i}] names {os.path.relpath(p, raw)}, not in the archive"
                )
        cdigest, csize = store.put_file(config_path)
        layers = []
        for p in layer_paths:
            with open(p, "rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            digest, size = store.put_file(p)
            mt = OCI_LAYER_GZIP if gz else "application/vnd.docker.image.rootfs.diff.tar"
            layers.append({"mediaType": mt, "digest": digest, "size": size})
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": cdigest, "size": csize},
            "layers": layers,
        }
        mraw = dumps(manifest)
        desc = {"mediaType": DOCKER_MANIFEST, "digest": store.put_bytes(mraw), "size": len(mraw)}
        tags = entry.get("RepoTags") or []
        if tags:
            desc["annotations"] = {REF_NAME: str(tags[0])}
        descs.append(desc)
    return store.layout(
        os.path.join("docker-archive", os.path.basename(raw)), {"schemaVersion": 2, "manifests": descs}
    )


def registry_for(ref: Ref, opts: ImageOptions) -> Registry:
    reg = _registry()
    if opts.stats is None:
        opts.stats = reg.Stats()
    creds = opts.creds or reg.docker_config_credentials(ref.host)
    return reg.Registry(ref.host, creds=creds, insecure=opts.insecure, stats=opts.stats, timeout=opts.timeout)


def _top_manifest(reg: Registry, ref: Ref, store: _Store) -> tuple[bytes, str, str]:
    """(bytes, media type, digest) of the manifest or index ``ref`` names. Each tag resolved is recorded in
    the cache; when the registry cannot be reached at all, the last recorded one is used (with a warning),
    so that an image read before can be read again offline."""
    record = os.path.join(store.root, "refs", _key(ref.host, ref.repo, ref.reference))
    try:
        raw, media_type, digest = reg.manifest(ref.repo, ref.reference)
    except _registry().RegistryUnreachable as exc:
        digest = ref.reference if ref.reference.startswith("sha256:") else None
        if digest is None:
            try:
                with open(record, encoding="ascii") as f:
                    digest = f.read().strip()
            except (OSError, ValueError):
                raise exc from None
        try:
            with open(store.path(digest), "rb") as f:
                raw = f.read(MAX_JSON + 1)
            doc = json.loads(raw)
            media_type = doc["mediaType"]
        except (OSError, ValueError, KeyError, TypeError):
            raise exc from None
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise exc from None
        import logging

        logging.getLogger(__name__).warning("%s; using the cached manifest %s of %s", exc, digest, ref)
        return raw, media_type, digest
    if not ref.reference.startswith("sha256:"):
        _mk(os.path.dirname(record))
        _write_atomic(record, digest.encode())
    return raw, media_type, digest


def _from_registry(ref: Ref, store: _Store, opts: ImageOptions, reg: Registry | None = None) -> str:
    with contextlib.ExitStack() as stack:
        if reg is None:
            reg = stack.enter_context(registry_for(ref, opts))
        raw, media_type, digest = _top_manifest(reg, ref, store)
        if not (is_index(media_type) or is_manifest(media_type)):
            raise UsageError(f"{ref}: unsupported manifest media type {media_type!r}")
        store.put_bytes(raw)
        top = {"mediaType": media_type, "digest": digest, "size": len(raw)}
        if not ref.reference.startswith("sha256:"):
            top["annotations"] = {REF_NAME: ref.reference}
        _fetch_tree(reg, ref, store, json.loads(raw), media_type)
        root = store.layout(
            os.path.join("registry", _key(ref.host, ref.repo, digest)),
            {"schemaVersion": 2, "manifests": [top]},
        )
        layout = OciLayout(root)
        images = list(layout.images())
        if opts.all_platforms:
            chosen = images
        elif opts.platforms or len(images) == 1:
            chosen = select_images(images, opts.platforms, str(ref))
        else:
            chosen = _default_choice(images, ref)
        for image in chosen:
            layers = image.manifest["layers"]
            if not opts.data and layers and is_nydus_bootstrap(layers[-1]):
                layers = [d for d in layers if ANNOTATION_NYDUS_BOOTSTRAP in (d.get("annotations") or {})]
            elif not opts.data:
                layers = [d for d in layers if not read_by_frame(d)]  # open_lazy fetches their frames
            for desc in layers:
                if not store.has(desc):
                    reg.blob_to(ref.repo, desc, store.path(desc["digest"]))
        return root


def _default_choice(images, ref):
    try:
        return select_images(images, None, str(ref))
    except UsageError:
        return []  # nothing to pre-fetch; the command says what to pick when it reads the layout


def _fetch_tree(reg: Registry, ref: Ref, store: _Store, doc: dict, media_type: str, depth: int = 0) -> None:
    """Every manifest below an index, and every config: small documents, each checked against its digest."""
    if depth > 4:
        raise UsageError(f"{ref}: image indexes nested too deep")
    if is_index(media_type):
        for desc in doc.get("manifests") or []:
            if not isinstance(desc, dict) or not (
                is_index(desc.get("mediaType")) or is_manifest(desc.get("mediaType"))
            ):
                continue
            if not store.has(desc):
                raw, mt, _ = reg.manifest(ref.repo, desc["digest"])
                store.put_bytes(raw)
            with open(store.path(desc["digest"]), "rb") as f:
                sub = json.loads(f.read())
            _fetch_tree(reg, ref, store, sub, desc["mediaType"], depth + 1)
        return
    config = doc.get("config")
    if isinstance(config, dict) and not store.has(config):
        reg.blob_to(ref.repo, config, store.path(config["digest"]))


# ---------------------------------------------------------------------------- writing
@contextlib.contextmanager
def destination(text: str, options: ImageOptions | None = None, mount_from: str | None = None):
    """A new local layout directory to write an image into, delivered to ``text`` afterwards (pushed to a
    registry, or packed into an oci-archive) when the body succeeds."""
    import shutil
    import tempfile

    opts = options or OPTIONS
    if not is_reference(text):
        yield text
        return
    ref = parse(text)
    if ref.kind == "oci":
        if ref.name:
            raise UsageError(f"{text}: naming the output image (oci:DIR:REF) is not supported; give oci:DIR")
        yield ref.path
        return
    if ref.kind == "docker-archive":
        raise UsageError(f"{text}: docker-archive is read only here; write oci-archive:PATH or docker://")
    work = tempfile.mkdtemp(prefix=".out.", dir=_mk(os.path.join(opts.cache_dir, "tmp")))
    out = os.path.join(work, "layout")
    try:
        yield out
        if ref.kind == "docker":
            src = parse(mount_from) if mount_from and mount_from.startswith("docker://") else None
            push_layout(out, ref, opts, src.repo if src is not None and src.host == ref.host else None)
        else:
            _tar_layout(out, ref.path, ref.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tar_layout(root: str, path: str, name: str | None) -> None:
    import tarfile

    if name:
        index_path = os.path.join(root, INDEX_FILE)
        with open(index_path, "rb") as f:
            index = json.load(f)
        for d in index["manifests"]:
            d["annotations"] = {**(d.get("annotations") or {}), REF_NAME: name}
        _write_atomic(index_path, dumps(index))
    tmp = f"{path}.{os.getpid()}.part"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for base, dirs, files in os.walk(root):
            dirs.sort()
            for fn in sorted(files):
                full = os.path.join(base, fn)
                tf.add(full, arcname=os.path.relpath(full, root), recursive=False)
    os.replace(tmp, path)


def push_layout(root: str, ref: Ref, opts: ImageOptions, mount_from: str | None = None) -> None:
    """Push the image of the layout ``root`` to ``ref``: blobs first (each checked for existence, mounted
    from ``mount_from`` when it is in the same registry), then manifests, then the index under the tag."""
    layout = OciLayout(root)
    entries = layout.index["manifests"]
    if len(entries) == 1:
        top = entries[0]
    else:
        top = {
            "mediaType": OCI_INDEX,
            "raw": dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        }
    with registry_for(ref, opts) as reg:
        for desc in entries:
            _push_tree(reg, layout, ref, desc, mount_from)
        if "raw" in top:
            raw, mt = top["raw"], OCI_INDEX
        else:
            with open(layout.check_blob(top, "top manifest"), "rb") as f:
                raw = f.read()
            mt = top["mediaType"]
        reg.put_manifest(ref.repo, ref.reference, raw, mt)


def _push_tree(reg: Registry, layout: OciLayout, ref: Ref, desc: dict, mount_from: str | None) -> None:
    doc, raw = layout.read_json(desc, f"manifest {desc['digest']}")
    if is_index(desc.get("mediaType")):
        for sub in doc.get("manifests") or []:
            _push_tree(reg, layout, ref, sub, mount_from)
    else:
        for blob in [doc["config"], *doc.get("layers", [])]:
            path = layout.check_blob(blob, f"blob {blob['digest']}")
            reg.push_blob(ref.repo, blob["digest"], path, mount_from)
    reg.put_manifest(ref.repo, desc["digest"], raw, desc["mediaType"])


# ---------------------------------------------------------------------------- lazy reading
#: The end of each remote blob fetched when it is first opened and kept on disk: its ToC and the tar
#: header after it are there, so a blob read before opens again without the registry.
TAIL = 64 << 10


def open_lazy(text: str, *, blob_dir: str | None = None, blobs: list[str] | None = None, options=None):
    """The nydus image of the registry reference ``text`` as a :class:`~.layer.Layer` of its bootstrap, whose
    data blobs are read lazily: manifests, configs and the bootstrap layer are fetched now (kept in the image
    cache), chunk data by Range requests when read (chunks.source.RemoteBlob), each checked chunk kept in the
    persistent chunk cache. A blob found whole in the image cache (or given with ``--blob``) is read there.
    The containerd EROFS image of one layer is that layer: a seekable one whose descriptor locates and digests
    its chunk table read by frame (:func:`_seekable_by_frame`), any other fetched whole; one of several layers
    is its layers overlaid (:func:`_erofs_stack`)."""
    from .layer import Layer, open_file
    from .oci import is_erofs_layer, readable_layers_of_layout

    opts = options or OPTIONS
    ref = parse(text)
    store = _Store(opts.cache_dir)
    meta = ImageOptions(**{**opts.__dict__, "data": False})
    reg = registry_for(ref, opts)
    meta.stats = opts.stats
    try:
        root = _from_registry(ref, store, meta, reg)
        image, descs, paths = readable_layers_of_layout(root, opts.platforms, by_frame=True)
    except BaseException:
        reg.close()
        raise
    if len(descs) > 1:
        return _erofs_stack(reg, ref, store, image, descs, paths, opts)
    desc, path = descs[0], paths[0]
    if path is None:
        return _seekable_by_frame(reg, ref, store, image, desc, opts)
    if is_erofs_layer(desc):
        # An EROFS image's one layer holds its data too: fetched whole (checked against its digest, which
        # ranges of it could not be), so nothing is read lazily and the session is done.
        reg.close()
        layer = open_file(path, annotations=desc.get("annotations"))
        layer.documents = _documents(store, image)
        return layer
    blobs_by_id = {
        d["digest"].split(":", 1)[1]: d
        for d in image.manifest["layers"]
        if isinstance(d.get("digest"), str)
        and _DIGEST.fullmatch(d["digest"])
        and type(d.get("size")) is int
        and d["size"] > 0  # a blob with chunks has bytes; any other size cannot be read by range
    }
    opener = _RemoteBlobs(reg, ref, store, blobs_by_id, opts)
    layer = Layer(path, blob_dir=blob_dir or store.blobs, blobs=blobs, blob_opener=opener)
    layer.documents = _documents(store, image)
    return layer


def _erofs_stack(
    reg: Registry, ref: Ref, store: _Store, image, descs: list[dict], paths: list, opts: ImageOptions
):
    """The layers of a containerd EROFS image, overlaid (overlay.LayerStack): each seekable layer whose
    descriptor locates its chunk table read by frame (:func:`_seekable_by_frame`, in a registry session of
    its own, which the layer closes), any other fetched whole (done by :func:`_from_registry`)."""
    from .layer import open_file
    from .overlay import open_stack

    sessions = [reg]

    def open_one(i: int, desc: dict):
        if paths[i] is None:
            session = sessions.pop() if sessions else registry_for(ref, opts)
            return _seekable_by_frame(session, ref, store, image, desc, opts)
        return open_file(paths[i], annotations=desc.get("annotations"))

    try:
        return open_stack(str(ref), descs, open_one, _documents(store, image))
    finally:
        for session in sessions:  # the first session, when no layer took it
            session.close()


def _seekable_by_frame(reg: Registry, ref: Ref, store: _Store, image, desc: dict, opts: ImageOptions):
    """The seekable EROFS layer ``desc`` read by range: its chunk table where the annotation says, checked
    against the annotation's digest (the manifest that holds both is checked against its own), and each frame
    against the table's SHA-512 of it as it is read. A table that records no frame digests leaves ranges
    unchecked: the layer is then fetched whole and checked against its descriptor's digest."""
    from .formats.seekable_erofs import HASH_NONE
    from .layer import open_file
    from .seekable import open_seekable

    blob_id = desc["digest"].split(":", 1)[1]
    opener = _RemoteBlobs(reg, ref, store, {blob_id: desc}, opts)
    layer = None
    try:
        got = opener.source(blob_id)
        if not isinstance(got, str):
            layer = open_seekable(
                got.path, desc.get("annotations"), file=got, name=blob_id, blob_opener=opener
            )
            if layer.source.table.hash_algo == HASH_NONE:
                layer.close()  # and the session with it
                layer = None
    except BaseException:
        opener.close()
        raise
    if layer is None:
        # The whole blob, checked against its digest: fetched by a registry that ignores Range, or now.
        opener.close()
        if not store.has(desc):
            with registry_for(ref, opts) as whole:
                opts.stats.blob_fetched += whole.blob_to(ref.repo, desc, store.path(desc["digest"]))
        layer = open_file(store.path(desc["digest"]), annotations=desc.get("annotations"))
    layer.documents = _documents(store, image)
    return layer


def _documents(store: _Store, image) -> list[tuple[str, bytes]]:
    """index.json (each index above the image, the top one first), manifest.json and config.json, as the
    registry sent them."""
    out = []
    for i, desc in enumerate(image.parents):
        name = "index.json" if i == len(image.parents) - 1 else f"index-{i}.json"
        with open(store.path(desc["digest"]), "rb") as f:
            out.append((name, f.read()))
    for name, desc in (("manifest.json", image.desc), ("config.json", image.manifest["config"])):
        with open(store.path(desc["digest"]), "rb") as f:
            out.append((name, f.read()))
    return out


class _RemoteBlobs:
    """Opens the blobs of one image in a registry as layers read by Range requests; owns the registry session
    (closed with the last blob, or when the process ends)."""

    def __init__(self, reg: Registry, ref: Ref, store: _Store, descs: dict, opts: ImageOptions) -> None:
        from .chunks.store import DEFAULT_LIMIT, ChunkStore, default_dir

        self.reg = reg
        self.ref = ref
        self.store = store
        self.descs = descs
        self.chunks = ChunkStore(opts.chunk_dir or default_dir(), opts.chunk_limit or DEFAULT_LIMIT)
        self.stats = opts.stats

    def __call__(self, blob_id: str):
        from .layer import Layer

        got = self.source(blob_id)
        if got is None or isinstance(got, str):
            return got if got is None else Layer(got, data_blob=True)
        return Layer(got.path, data_blob=True, source=got, name=blob_id)

    def source(self, blob_id: str):
        """The blob ``blob_id`` of the image read by range (a RemoteBlob); the path of the whole blob, fetched
        and checked, from a registry that ignores ranges; None for a blob the image does not have."""
        from .chunks.source import RemoteBlob

        desc = self.descs.get(blob_id)
        if desc is None:
            return None
        digest, size = desc["digest"], desc["size"]
        name = f"docker://{self.ref.host}/{self.ref.repo}@{digest}"
        reg = _registry()
        stats = self.stats

        def fetch(offset: int, n: int) -> bytes:
            return self.reg.blob_range(self.ref.repo, digest, offset, n)

        def whole() -> str:
            path = self.store.path(digest)
            if not self.store.has(desc):
                n = self.reg.blob_to(self.ref.repo, desc, path)
                stats.blob_fetched += n
                if source is not None:
                    source.fetched += n
            return path

        def counted(n: int) -> None:
            stats.blob_fetched += n

        source = None
        try:
            tail, fetched = self._tail(desc, fetch)
        except reg.RangeIgnored:
            return whole()
        source = RemoteBlob(
            name,
            size,
            fetch,
            tail=tail,
            whole=whole,
            fallback=reg.RangeIgnored,
            store=self.chunks,
            on_fetch=counted,
        )
        source.fetched = fetched
        stats.blob_bytes += size
        return source

    def close(self) -> None:
        self.reg.close()
        self.chunks.close()

    def _tail(self, desc: dict, fetch) -> tuple[tuple[int, bytes], int]:
        """((offset, bytes) of the last TAIL bytes of the blob, bytes fetched): from the cache, else fetched
        and kept there."""
        size = desc["size"]
        start = max(0, size - TAIL)
        path = os.path.join(self.store.root, "tails", desc["digest"].split(":", 1)[1])
        try:
            with open(path, "rb") as f:
                data = f.read(TAIL + 1)
            if len(data) == size - start:
                return (start, data), 0
        except OSError:
            pass
        data = fetch(start, size - start)
        self.stats.blob_fetched += len(data)
        _mk(os.path.dirname(path))
        _write_atomic(path, data)
        return (start, data), len(data)
