"""Sub-commands backed by the operation modules: pack, unpack, diff, merge, convert, cache-file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from .errors import UsageError


def _progress_wanted(args) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(args, description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr (TTY only, not with --quiet); yields an update(done) callable."""
    if not _progress_wanted(args):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=_stderr_console(),
    ) as prog:
        task = prog.add_task(description, total=total)
        last = [0]

        def update(done: int) -> None:
            if done - last[0] >= 1 << 20 or (total and done >= total):
                last[0] = done
                prog.update(task, completed=done)

        yield update


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


#: pack's and convert's --chunk-size for nydus layers when none is given (a seekable layer's is 4M).
NYDUS_CHUNK_SIZE = "0x100000"


def _pack_options(args, chunk_size: str | None = None, **extra):
    """PackOptions from --compressor, --digester and --chunk-size (shared by pack and convert); ``chunk_size``
    instead of --chunk-size when that means something else (convert --to erofs --seekable)."""
    from .codecs import Compressor
    from .digests import Digester
    from .pack import PackOptions
    from .units import parse_size

    try:
        return PackOptions(
            compressor=Compressor.parse(args.compressor),
            digester=Digester.parse(args.digester),
            chunk_size=parse_size(chunk_size or args.chunk_size or NYDUS_CHUNK_SIZE, "--chunk-size"),
            **extra,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_pack(args) -> int:
    from .pack import pack

    erofs = getattr(args, "format", "nydus") == "erofs"
    if getattr(args, "type", "tar-rafs") == "estargz-ref":
        if erofs:
            raise UsageError("--type estargz-ref writes a RAFS bootstrap: not with --format erofs")
        _refuse_erofs_only(args, "--format erofs")
        return _pack_estargz_ref(args)
    if getattr(args, "blob_inline_meta", False) and getattr(args, "type", "tar-rafs") != "targz-ref":
        raise UsageError(
            "--blob-inline-meta is for --type targz-ref (a tar-rafs layer has its metadata inline)"
        )
    if getattr(args, "type", "tar-rafs") == "targz-ref":
        if erofs:
            raise UsageError("--type targz-ref writes a RAFS bootstrap: not with --format erofs")
        _refuse_erofs_only(args, "--format erofs")
        return _pack_targz_ref(args)
    if erofs:
        return _cmd_pack_erofs(args)
    _refuse_erofs_only(args, "--format erofs")
    opts = _pack_options(args, bootstrap=args.bootstrap)
    total = os.path.getsize(args.source) if args.source != "-" and os.path.isfile(args.source) else None
    with progress_bar(args, "pack", total) as update:
        opts.progress = update
        res = pack(args.source, args.output, opts)
    if args.json:
        from .cli import print_json

        print_json(res.to_json())
        return 0
    from .cli import plural

    print(f"sha256:{res.digest}  {res.path}")
    print(
        f"{plural(res.entries, 'entry')}, {plural(res.files, 'file')}, {res.data_bytes} bytes in "
        f"{plural(res.chunks, 'chunk')} ({res.unique_chunks} stored, {res.stored_bytes} bytes), "
        f"bootstrap {res.bootstrap_size} bytes, blob {res.size} bytes"
    )
    return 0


def _pack_estargz_ref(args) -> int:
    """The bootstrap over an eStargz blob, as nydus's stargz builder writes it (estargz.pack_ref)."""
    from .estargz import pack_ref
    from .units import parse_size

    # The layer decides the chunk size; an explicit --chunk-size (not pack's default) must agree with it.
    chunk_size = parse_size(args.chunk_size, "--chunk-size") if args.chunk_size is not None else None
    res = pack_ref(args.source, args.output, chunk_size)
    if args.json:
        from .cli import print_json

        print_json(res)
        return 0
    print(
        f"{res['path']}: bootstrap {res['bootstrap_size']} bytes over eStargz blob {res['blob_id']} "
        f"({res['entries']} TOC entries, {res['chunks']} chunks, TOC digest {res['toc_digest']})"
    )
    if res["blob_meta"]:
        print(f"{res['blob_meta']}: its blob.meta (nydusd reads it from the blob directory, beside the blob)")
    return 0


def _pack_targz_ref(args) -> int:
    """The bootstrap and blob.meta over a plain .tar.gz, as nydus-image's targz-ref builder writes them."""
    from .targz import pack_ref
    from .units import parse_size

    # The chunks stay in the gzip: its compression is the layer's, and the digester is sha256.
    if args.compressor != "zstd":
        raise UsageError("--type targz-ref keeps the layer's gzip: --compressor does not apply")
    if args.digester not in ("blake3", "sha256"):
        raise UsageError(f"--type targz-ref digests chunks with sha256, not {args.digester}")
    if args.bootstrap:
        raise UsageError("--type targz-ref: OUT is the bootstrap already; --bootstrap does not apply")
    if args.source == "-":
        raise UsageError("--type targz-ref needs the .tar.gz as a file: its sha256 is the blob id")
    res = pack_ref(
        args.source,
        args.output,
        parse_size(args.chunk_size or NYDUS_CHUNK_SIZE, "--chunk-size"),
        args.blob_inline_meta,
    )
    if args.json:
        from .cli import print_json

        print_json(res)
        return 0
    if not args.quiet:
        print(
            f"{res['path']}: {res['form']}, bootstrap {res['bootstrap_size']} bytes, over gzip blob {res['blob_id']} "
            f"({res['entries']} entries, {res['chunks']} chunks, {res['zran_contexts']} zran contexts)"
        )
        if res["blob_meta"]:
            print(
                f"{res['blob_meta']}: its blob.meta (nydusd reads it from the blob directory, beside the blob)"
            )
    return 0


def _erofs_options(args, **extra):
    """ErofsOptions from pack's and convert's --dm-verity, --no-verity-superblock, --salt, --inline-data and
    --erofs-compression."""
    from .erofs_codecs import parse_spec
    from .erofs_write import ErofsOptions

    opts = ErofsOptions(
        dm_verity=args.dm_verity,
        verity_superblock=not args.no_verity_superblock,
        inline_data=getattr(args, "inline_data", False),
        **extra,
    )
    if args.salt is not None:
        opts.salt = _salt_arg(args.salt)
    if args.erofs_compression is not None:
        opts.compression = tuple(parse_spec(args.erofs_compression))
    return opts


def _refuse_erofs_only(args, needs: str) -> None:
    """EROFS options given for a nydus output would be silently ignored: say so instead."""
    given = [
        opt
        for opt, on in (
            ("--dm-verity", args.dm_verity),
            ("--no-verity-superblock", args.no_verity_superblock),
            ("--salt", args.salt is not None),
            ("--inline-data", getattr(args, "inline_data", False)),
            ("--seekable", args.seekable),
            ("--seekable-hash", args.seekable_hash is not None),
            ("--erofs-compression", args.erofs_compression is not None),
        )
        if on
    ]
    if given:
        raise UsageError(f"{', '.join(given)}: only with {needs}")


def _seekable_options(args):
    """SeekableOptions from --seekable's options, or None without --seekable (whose options are then refused
    rather than ignored: --chunk-size has no meaning for a plain EROFS image)."""
    from .seekable_write import DEFAULT_CHUNK_SIZE, HASH_NAMES, SeekableOptions, check_chunk_size
    from .units import parse_size

    if not args.seekable:
        given = [
            opt
            for opt, on in (
                ("--chunk-size", args.chunk_size is not None),
                ("--seekable-hash", args.seekable_hash is not None),
            )
            if on
        ]
        if given:
            raise UsageError(f"{', '.join(given)}: a plain EROFS image has no chunks; only with --seekable")
        return None
    if args.no_verity_superblock:
        raise UsageError(
            "--no-verity-superblock: a seekable layer's dm-verity frame always holds the superblock"
        )
    chunk = DEFAULT_CHUNK_SIZE if args.chunk_size is None else parse_size(args.chunk_size, "--chunk-size")
    check_chunk_size(chunk)
    opts = SeekableOptions(
        chunk_size=chunk, hash_algo=HASH_NAMES[args.seekable_hash or "sha512"], dm_verity=args.dm_verity
    )
    if args.salt is not None:
        opts.salt = _salt_arg(args.salt)
    return opts


def _salt_arg(value: str) -> bytes:
    try:
        salt = bytes.fromhex("" if value == "-" else value)
    except ValueError:
        raise UsageError(f"--salt {value!r}: not hex (or - for none)") from None
    if len(salt) > 256:
        raise UsageError(f"--salt: {len(salt)} bytes, dm-verity takes at most 256")
    return salt


def _root_hash_arg(value: str | None) -> bytes | None:
    """--root-hash as hex, or as the digest the converter's annotation holds: sha256:HEX for a plain layer,
    sha512:HEX for a seekable one."""
    if value is None:
        return None
    algo, _, text = value.rpartition(":")
    sizes = {"sha256": (32,), "sha512": (64,), "": (32, 64)}.get(algo, ())
    try:
        root = bytes.fromhex(text)
    except ValueError:
        root = b""
    if len(root) not in sizes:
        raise UsageError(
            f"--root-hash {value!r}: not a root hash (64 or 128 hex digits, sha256: or sha512: optional)"
        )
    return root


def _cmd_pack_erofs(args) -> int:
    from .erofs_write import pack_erofs

    seekable = _seekable_options(args)
    if seekable is not None:
        return _cmd_pack_seekable(args, seekable)
    opts = _erofs_options(args)
    total = os.path.getsize(args.source) if args.source != "-" and os.path.isfile(args.source) else None
    with progress_bar(args, "pack", total) as update:
        opts.progress = update
        res = pack_erofs(args.source, args.output, opts)
    if args.json:
        from .cli import print_json

        print_json(res.to_json())
        return 0
    from .cli import plural

    print(f"sha256:{res.digest}  {res.path}")
    print(
        f"EROFS image of {plural(res.inodes, 'inode')}, {plural(res.files, 'file')} ({res.data_bytes} bytes): "
        f"{res.erofs_size} bytes"
    )
    if res.compression is not None:
        print(
            f"compressed with {res.compression}: {plural(res.compressed_files, 'file')} in "
            f"{plural(res.compressed_blocks, 'block')} (the others stay flat)"
        )
    if res.root_hash is not None:
        sb = "with" if res.verity_superblock else "without"
        print(f"dm-verity root hash {res.root_hash} (hash offset {res.hash_offset}, {sb} superblock)")
    return 0


def _cmd_pack_seekable(args, seekable) -> int:
    from .seekable_write import pack_seekable

    opts = _erofs_options(args)  # the image inside is plain: pack_seekable puts dm-verity in its own frame
    total = os.path.getsize(args.source) if args.source != "-" and os.path.isfile(args.source) else None
    with progress_bar(args, "pack", total) as update:
        opts.progress = update
        res = pack_seekable(args.source, args.output, seekable, opts)
    if args.json:
        from .cli import print_json

        print_json(res.to_json())
        return 0
    from .cli import plural

    e = res.erofs
    print(f"sha256:{res.digest}  {res.path}")
    print(
        f"seekable EROFS layer of {plural(e.inodes, 'inode')}, {plural(e.files, 'file')} ({e.data_bytes} bytes): "
        f"{res.size} bytes, the image inside {res.uncompressed_size} bytes ({res.diff_id})"
    )
    print(
        f"{plural(res.frames, 'zstd frame')} of {res.chunk_size} bytes, chunk table at {res.chunk_table_offset} "
        f"({'sha512' if res.hash_algo else 'no'} frame checksums)"
    )
    if res.root_hash is not None:
        print(f"dm-verity root hash sha512:{res.root_hash} (frame at {res.verity_offset})")
    return 0


def _add_seekable_args(s) -> None:
    s.add_argument(
        "--seekable",
        action="store_true",
        help="erofs: a seekable EROFS layer (containerd's --erofs-seekable): the image in independent zstd "
        "frames, a chunk table, and with --dm-verity a dm-verity frame (sha512, no salt)",
    )
    s.add_argument(
        "--seekable-hash",
        choices=("sha512", "none"),
        help="--seekable: a SHA-512 of each frame in the chunk table (sha512, the default) or none",
    )


def _add_verity_args(s) -> None:
    s.add_argument(
        "--dm-verity",
        action="store_true",
        help="append a dm-verity hash tree (sha256, 4 KiB blocks; --seekable: sha512, in a frame of its own)",
    )
    s.add_argument(
        "--no-verity-superblock",
        action="store_true",
        help="leave the dm-verity superblock out (veritysetup --no-superblock)",
    )
    s.add_argument(
        "--salt",
        metavar="HEX",
        help="dm-verity salt in hex, - for none (default: 32 zero bytes as containerd's differ; --seekable: "
        "none, as its converter)",
    )
    s.add_argument(
        "--erofs-compression",
        metavar="SPEC",
        help="compress file data as mkfs.erofs -z SPEC: ALG[,LEVEL][:ALG2[,LEVEL]], ALG one of lz4, lz4hc "
        "(level 0-12), lzma (0-9, 100-109), deflate (0-9), zstd (0-22), e.g. lz4hc,12; files are cut into "
        "64 KiB extents each compressed on its own, kept as is where that saves no block; ALG2 and later "
        "are checked but not used (mkfs.erofs may pick one of them per pcluster, we always use ALG)",
    )


def _open(args):
    from .layer import open_layer

    return open_layer(args.layer, blob_dir=args.blob_dir, blobs=args.blob)


def cmd_unpack(args) -> int:
    from .unpack import to_dir, to_tar

    if not args.output and not args.to_dir:
        raise UsageError("unpack needs -o OUT.tar (or - for stdout) or --to-dir DIR")
    if args.output == "-" and not args.to_dir and sys.stdout.isatty():
        # As tar does: a binary archive on a terminal is garbage on the screen and never what was meant.
        raise UsageError(
            "refusing to write a tar to a terminal: redirect stdout (> OUT.tar, | tar t) or give -o FILE"
        )
    with _open(args) as layer:
        if args.to_dir:
            res = to_dir(layer, args.to_dir)
        else:
            res = to_tar(layer, args.output)
    if args.output != "-" and not args.quiet:
        from .cli import plural

        msg = f"{plural(res.entries, 'entry')}, {plural(res.files, 'file')}, {res.bytes} bytes"
        if res.skipped:
            msg += f", {res.skipped} skipped (sockets, or devices without privilege)"
        print(msg, file=sys.stderr)
    return 0


def cmd_diff(args) -> int:
    from .diff import diff_paths

    diffs = diff_paths(args.a, args.b, blob_dir=args.blob_dir, blobs=args.blob)
    if args.json:
        from .cli import print_json

        print_json({"equal": not diffs, "differences": [d.to_json() for d in diffs]})
    elif diffs:
        for d in diffs:
            print(d)
        from .cli import plural

        print(plural(len(diffs), "difference"))
    else:
        print("no differences")
    return 1 if diffs else 0


def cmd_cache_file(args) -> int:
    from .unpack import cache_file

    with _open(args) as layer:
        size = cache_file(layer, args.output, args.blob_index)
    if not args.quiet:
        print(f"{args.output}: {size} bytes", file=sys.stderr)
    return 0


def cmd_merge(args) -> int:
    from .merge import merge

    res = merge(args.layers, args.output, with_tar=args.with_tar, blob_dir=args.blob_dir)
    if args.json:
        from .cli import print_json

        print_json(res.to_json())
        return 0
    from .cli import plural

    print(
        f"{res.output}: {plural(res.layers, 'layer')}, bootstrap {res.bootstrap_size} bytes, "
        f"{plural(len(res.blobs), 'blob')}"
    )
    for i, b in enumerate(res.blobs):
        print(f"  [{i}] {b}")
    return 0


def cmd_corrupt(args) -> int:
    from .corrupt import corrupt, parse_range

    what = corrupt(
        args.layer,
        args.output,
        flip_bit=args.flip_bit,
        truncate=args.truncate,
        zero_range=parse_range(args.zero_range) if args.zero_range else None,
    )
    print(f"{args.output}: {what}")
    return 0


def cmd_convert(args) -> int:
    from .convert import convert

    erofs = seekable = None
    if args.to == "erofs":
        erofs = _erofs_options(args)
        seekable = _seekable_options(args)
        # --chunk-size is a seekable layer's frame size here; no nydus chunk is written.
        opts = _pack_options(args, chunk_size=NYDUS_CHUNK_SIZE)
    else:
        _refuse_erofs_only(args, "--to erofs")
        opts = _pack_options(args)
    from .imageref import destination, materialise

    source = materialise(args.source)
    with (
        progress_bar(args, "convert", None) as update,
        destination(args.output, mount_from=args.source) as out,
    ):
        res = convert(
            source,
            out,
            platforms=args.platform,
            options=opts,
            progress=update,
            erofs=erofs,
            seekable=seekable,
        )
        res.output = args.output
    if args.json:
        from .cli import print_json

        print_json(res.to_json())
        return 0
    from .cli import plural

    for im in res.images:
        if im.converted and args.to == "erofs":
            print(
                f"{im.source} ({im.platform or 'no platform'}) -> {im.target}: {plural(im.layers, 'layer')} -> "
                f"{plural(len(im.blobs), 'EROFS layer')}"
            )
        elif im.converted:
            print(
                f"{im.source} ({im.platform or 'no platform'}) -> {im.target}: {plural(im.layers, 'layer')} -> "
                f"{plural(len(im.blobs), 'nydus blob')} + bootstrap {im.bootstrap}"
            )
        else:
            print(f"{im.source} ({im.platform or 'no platform'}): already a nydus image, copied")
    print(f"{res.output}: {'written' if res.changed else 'a copy (nothing to convert)'}")
    return 0


def cmd_check(args) -> int:
    from .check import check
    from .imageref import OPTIONS, materialise

    result = check(materialise(args.image), materialise(args.source), OPTIONS.platforms)
    if args.json:
        from .cli import print_json

        print_json(result.to_json())
        return 0 if result.ok else 1
    for d in result.differences:
        print(d)
    for line in result.problems:
        print(f"verify: {line}")
    if result.ok:
        print(f"{args.image}: the same file system as {args.source}")
    else:
        print(
            f"{args.image}: {len(result.differences)} difference(s), {len(result.problems)} verify finding(s)"
        )
    return 0 if result.ok else 1


def cmd_verify(args) -> int:
    from .layer import open_layer

    sources = args.source or []
    if sources and len(sources) != len(args.layers):
        raise UsageError(
            f"--source given {len(sources)} time(s) for {len(args.layers)} layer(s): give one per layer"
        )
    toc_digests = getattr(args, "toc_digest", None) or []
    if toc_digests and len(toc_digests) != len(args.layers):
        raise UsageError(
            f"--toc-digest given {len(toc_digests)} time(s) for {len(args.layers)} layer(s): give one per layer"
        )
    from .tarstream import check_tar_input

    for source in sources:
        check_tar_input(source, "--source")
    rules = None
    if args.rules:
        from .rules import load_rules

        rules = load_rules(args.rules)
    root_hash = _root_hash_arg(args.root_hash)
    verity_salt = _salt_arg(args.salt) if args.salt is not None else None
    results = []
    worst = 0
    for i, path in enumerate(args.layers):
        try:
            layer = open_layer(path, blob_dir=args.blob_dir, blobs=args.blob)
        except Exception as exc:
            from .errors import NydusInspectError

            if not isinstance(exc, NydusInspectError):
                raise
            results.append({"path": path, "ok": False, "unreadable": str(exc)})
            worst = max(worst, 2)
            continue
        with layer:
            from .overlay import LayerStack

            parts = [(path, layer)]
            if isinstance(layer, LayerStack):
                # An image of several EROFS layers: each layer verified as it would be on its own.
                if root_hash is not None or sources:
                    raise UsageError(
                        f"{path}: an image of {len(layer.layers)} EROFS layers: --root-hash and --source apply "
                        "to one layer; give the layer's file (blobs/sha256/<digest>)"
                    )
                n = len(layer.layers)
                parts = [
                    (f"{path} [layer {k + 1}/{n} {desc.get('digest')}]", sub)
                    for k, (sub, desc) in enumerate(zip(layer.layers, layer.descriptors))
                ]
            for name, one in parts:
                code = _verify_one(
                    args,
                    name,
                    path,
                    one,
                    sources[i] if sources else None,
                    toc_digests[i] if toc_digests else None,
                    (root_hash, verity_salt),
                    rules,
                    results,
                )
                worst = max(worst, code)

    if args.json:
        from .cli import print_json

        print_json(
            {
                "ok": worst == 0,
                "layers": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
            }
        )
        return worst
    for r in results:
        if "unreadable" in r:
            # Not a verdict on the layer but an input that does not open: an error line, on stderr.
            msg, path = r["unreadable"], r["path"]
            msg = msg[len(path) + 2 :] if msg.startswith(path + ": ") else msg
            sys.stderr.write(f"nydus-inspect: error: {path}: unreadable: {msg}\n")
            continue
        print(f"{r['path']}: {r['summary']}")
        for line in r["_lines"]:
            print(f"  {line}")
        for key, n in r["suppressed"].items():
            print(f"  ... {n} more {key} {'finding' if n == 1 else 'findings'}")
        for note in r["notes"]:
            print(f"  note: {note}")
        for line in r.get("_rule_lines", []):
            print(f"  {line}")
        if "rules_error" in r:
            print(f"  rules: {r['rules_error']}")
    return worst


def _verify_one(args, name: str, path: str, layer, source, toc_digest, verity, rules, results: list) -> int:
    """Verify one layer (``name`` in the report, ``path`` as given) and append its result to ``results``; the
    exit code it calls for. ``verity``: (root hash, salt)."""
    from .verify import verify

    root_hash, verity_salt = verity
    with progress_stages(args, name) as update:
        if root_hash is not None and layer.kind != "erofs":
            raise UsageError(
                f"{name}: --root-hash applies to plain EROFS images, this is a {layer.kind} layer"
            )
        report = verify(
            layer,
            source=source,
            progress=update,
            toc_digest=toc_digest,
            root_hash=root_hash,
            verity_salt=verity_salt,
        )
        bad_input = [f for f in report.findings if f.check in ("verity.payload", "verity.root")]
        if bad_input:
            # Not damage found but a payload or root hash that does not fit the image: an input error.
            f = bad_input[0]
            msg = f.message + (
                f" (given {f.expected}, the tree's {f.found})" if f.check == "verity.root" else ""
            )
            results.append({"path": name, "ok": False, "unreadable": msg})
            return 2
        entry = report.to_json()
        entry["summary"] = report.summary()
        ok = report.ok
        if rules is not None:
            from .rules import apply_rules, image_stats, needs_analysis

            try:
                stats = image_stats(layer)
                analysis = None
                if needs_analysis(rules):
                    from .analyze import analyze

                    analysis = analyze([path], blob_dir=args.blob_dir, blobs=args.blob)
                    entry["analysis"] = analysis.figures()
                outcome = apply_rules(rules, stats, analysis)
                entry["stats"] = stats.to_json()
                entry["rules"] = [r.to_json() for r in outcome]
                entry["_rule_lines"] = [str(r) for r in outcome]
                ok = ok and all(r.ok for r in outcome)
            except UsageError as exc:
                entry["rules_error"] = str(exc)
                ok = False
        entry["ok"] = ok
        entry["_lines"] = [str(f) for f in report.findings]
        results.append(entry)
    return 0 if ok else 1


@contextlib.contextmanager
def progress_stages(args, path: str) -> Iterator:
    """verify's progress(stage, done, total) as a rich bar on a TTY."""
    if not _progress_wanted(args):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=_stderr_console(),
    ) as prog:
        task = prog.add_task(os.path.basename(path), total=None)

        def update(stage: str, done: int, total: int) -> None:
            prog.update(
                task, description=f"{os.path.basename(path)}: {stage}", completed=done, total=total or None
            )

        yield update


def _layer_args(p) -> None:
    p.add_argument("layer", metavar="LAYER", help="nydus layer blob, or a bootstrap with its blobs")
    p.add_argument("--blob-dir", metavar="DIR", help="where blob files named by blob id live")
    p.add_argument("--blob", metavar="FILE", action="append", help="a blob file (repeatable)")
    from .imageref import add_arguments

    add_arguments(p)


def register(sub) -> None:
    from .imageref import add_arguments

    s = sub.add_parser("pack", help="OCI layer tar (plain, gzip, zstd, or - for stdin) -> nydus layer blob")
    s.add_argument("source", metavar="LAYER.tar", help="an OCI layer tar, plain, gzip or zstd; - reads stdin")
    s.add_argument("-o", "--output", required=True, metavar="OUT.blob")
    s.add_argument("--compressor", default="zstd", help="zstd (default), lz4_block or none")
    s.add_argument("--digester", default="blake3", help="blake3 (default) or sha256")
    s.add_argument(
        "--chunk-size",
        help="nydus: a power of 2 from 4K to 16M: 1M, 0x100000 or 1048576 (default 1M); erofs --seekable: "
        "uncompressed bytes per zstd frame, a multiple of 4K up to 64M (default 4M)",
    )
    s.add_argument(
        "--bootstrap", metavar="OUT.boot", help="also write the bootstrap, naming the blob by its digest"
    )
    s.add_argument(
        "--type",
        choices=("tar-rafs", "estargz-ref", "targz-ref"),
        default="tar-rafs",
        help="tar-rafs (default): a nydus layer blob from a tar; estargz-ref: LAYER is an eStargz blob and OUT "
        "the RAFS v6 bootstrap that references it (the blob keeps its sha256 as its blob id; its blob.meta is "
        "written beside OUT, named by its sha256); targz-ref: the same over a plain .tar.gz, its chunks read "
        "through zran contexts",
    )
    s.add_argument(
        "--blob-inline-meta",
        action="store_true",
        help="targz-ref: OUT is the meta blob (blob.meta, chunk digests, bootstrap, ToC), as nydus-image "
        "--blob-inline-meta --features blob-toc writes it for the snapshotter",
    )
    s.add_argument("--json", action="store_true", help="what was written (digest, counts, ToC) as JSON")
    s.add_argument("-q", "--quiet", action="store_true")
    s.add_argument(
        "--format",
        choices=("nydus", "erofs"),
        default="nydus",
        help="nydus (default): a nydus layer blob; erofs: a plain EROFS image as containerd converts a layer",
    )
    s.add_argument(
        "--inline-data",
        action="store_true",
        help="erofs: pack file tails after their inodes (containerd does not)",
    )
    _add_verity_args(s)
    _add_seekable_args(s)
    s.set_defaults(func=cmd_pack, bulk=True)

    s = sub.add_parser("unpack", help="nydus layer -> OCI layer tar, or a directory")
    _layer_args(s)
    s.add_argument("-o", "--output", metavar="OUT.tar", help="tar to write (- for stdout)")
    s.add_argument("--to-dir", metavar="DIR", help="extract into DIR (never writes outside it)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_unpack, bulk=True)

    s = sub.add_parser("diff", help="compare two trees (layer tar, nydus layer or bootstrap) entry by entry")
    s.add_argument(
        "a",
        metavar="SOURCE",
        help="the expected tree: a layer tar ('-' for stdin), a nydus layer or a bootstrap",
    )
    s.add_argument("b", metavar="LAYER", help="the tree to check against it (same kinds)")
    s.add_argument("--blob-dir", metavar="DIR")
    s.add_argument("--blob", metavar="FILE", action="append")
    add_arguments(s)
    s.add_argument(
        "--json", action="store_true", help="every difference as JSON (path, field, expected, found)"
    )
    s.set_defaults(func=cmd_diff)

    s = sub.add_parser("merge", help="per-layer nydus blobs (lowest first) -> one merged RAFS v6 bootstrap")
    s.add_argument(
        "layers", nargs="+", metavar="LAYER", help="nydus layer blobs (or bootstraps), lowest first"
    )
    s.add_argument("-o", "--output", required=True, metavar="MERGED.boot")
    s.add_argument(
        "--with-tar",
        action="store_true",
        help="write the bootstrap layer form: image/image.boot in a tar (gzip if OUT ends in .gz)",
    )
    s.add_argument("--blob-dir", metavar="DIR", help="where blobs of bootstrap-only inputs live")
    s.add_argument("--json", action="store_true", help="the output, its blob table and sizes as JSON")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("verify", help="check layers end to end: ToC, blob.meta, every chunk, the bootstrap")
    s.add_argument(
        "layers",
        nargs="+",
        metavar="LAYER",
        help="layer blobs, bootstraps or OCI layouts, each checked on its own",
    )
    s.add_argument(
        "--source",
        action="append",
        metavar="SOURCE.tar",
        help="also compare the tree with this tar (one per LAYER, in order)",
    )
    s.add_argument(
        "--toc-digest",
        action="append",
        metavar="sha256:HEX",
        help="an eStargz layer's TOC digest (its containerd.io/snapshot/stargz/toc.digest annotation) that its "
        "TOC must hash to (one per LAYER, in order)",
    )
    s.add_argument(
        "--rules",
        metavar="RULES.yaml",
        help="thresholds in a YAML or JSON file, dive's rule names where they mean the same: lowestEfficiency, "
        "highestWastedBytes, highestUserWastedPercent, highestDuplicateChunkBytes, lowestPrefetchCoverage, "
        "highestUnusedChunkBytes, lowestCompressionRatio, highestChunkCount, highestBlobCount (the README "
        "defines each; 'disabled' turns one off)",
    )
    s.add_argument("--blob-dir", metavar="DIR")
    s.add_argument("--blob", metavar="FILE", action="append")
    add_arguments(s)
    s.add_argument(
        "--json", action="store_true", help="each layer's checks, findings and rule results as JSON"
    )
    s.add_argument("-q", "--quiet", action="store_true")
    s.add_argument(
        "--root-hash",
        metavar="HEX",
        help="plain EROFS: the dm-verity root hash to check the appended hash tree against (or sha256:HEX; "
        "sha512:HEX for a seekable layer's dm-verity frame)",
    )
    s.add_argument(
        "--salt", metavar="HEX", help="plain EROFS without a dm-verity superblock: its salt (default: zeros)"
    )
    s.set_defaults(func=cmd_verify, bulk=True)

    s = sub.add_parser("corrupt", help="a damaged copy of a layer, for negative tests")
    s.add_argument("layer", metavar="LAYER", help="the file to copy and damage (any file)")
    s.add_argument("-o", "--output", required=True, metavar="BAD")
    s.add_argument(
        "--flip-bit", type=lambda v: int(v, 0), metavar="N", help="flip bit N (byte N//8, bit N%%8)"
    )
    s.add_argument("--truncate", type=lambda v: int(v, 0), metavar="N", help="keep the first N bytes")
    s.add_argument("--zero-range", metavar="A:B", help="zero bytes [A, B)")
    s.set_defaults(func=cmd_corrupt)

    s = sub.add_parser(
        "convert", help="OCI image layout -> nydus image (blob layers + bootstrap) in a new layout"
    )
    s.add_argument(
        "source", metavar="OCI_LAYOUT_IN", help="an OCI image layout directory (as skopeo copy ... oci:DIR)"
    )
    s.add_argument("output", metavar="OCI_LAYOUT_OUT", help="the new layout (must not exist, or be empty)")
    s.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH[/VARIANT]",
        help="which images to convert (repeatable, or 'all'); default: the only one, else linux/amd64",
    )
    s.add_argument("--compressor", default="zstd", help="zstd (default), lz4_block or none")
    s.add_argument("--digester", default="blake3", help="blake3 (default) or sha256")
    s.add_argument(
        "--chunk-size",
        help="nydus: a power of 2 from 4K to 16M: 1M, 0x100000 or 1048576 (default 1M); erofs --seekable: "
        "uncompressed bytes per zstd frame, a multiple of 4K up to 64M (default 4M)",
    )
    s.add_argument("--json", action="store_true", help="each image converted, with its blobs, as JSON")
    s.add_argument(
        "--to",
        choices=("nydus", "erofs"),
        default="nydus",
        help="nydus (default), or erofs: EROFS layers as containerd's converter writes them",
    )
    _add_verity_args(s)
    _add_seekable_args(s)
    add_arguments(s, platform=False)
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_convert, bulk=True)

    s = sub.add_parser(
        "check", help="is a nydus image the same file system as its source image? (no mount, no root)"
    )
    s.add_argument("image", metavar="NYDUS_IMAGE", help="the nydus image: a layout directory or a reference")
    s.add_argument("--source", required=True, metavar="OCI_IMAGE", help="the image it was converted from")
    s.add_argument(
        "--json", action="store_true", help="every difference and each layer's verify findings as JSON"
    )
    add_arguments(s)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "cache-file", help="the blob's uncompressed view (nydusd's cache file), for erofs tools"
    )
    _layer_args(s)
    s.add_argument("-o", "--output", required=True, metavar="FILE")
    s.add_argument(
        "--blob-index", type=int, default=None, help="which blob of the table (default: the layer's own)"
    )
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_cache_file)
