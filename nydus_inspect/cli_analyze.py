"""The ``analyze`` sub-command: a dive-style report on a nydus image's layers (see :mod:`nydus_inspect.analyze`)."""

from __future__ import annotations


def _size(n: int) -> str:
    """Bytes as a person reads them (binary units, 3 significant figures)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} B"


def _tally(t) -> str:
    return f"{t.count} ({_size(t.bytes)})"


def cmd_analyze(args) -> int:
    from .analyze import analyze
    from .cli import plural, print_table

    a = analyze(args.image, blob_dir=args.blob_dir, blobs=args.blob)
    if args.json:
        from .cli import StreamedArray, print_json_streaming

        print_json_streaming(a.to_json(with_origins=not args.no_origins, array=StreamedArray))
        return 0
    img = a.figures()
    print(
        f"{a.source}: {plural(len(a.layers), 'layer')}; the final image has {plural(img['final_entries'], 'entry')}, "
        f"{plural(img['final_files'], 'file')} ({_size(img['final_bytes'])})"
    )
    print()
    print_table(
        [
            "LAYER",
            "ADDED",
            "MODIFIED",
            "REMOVED",
            "STORED",
            "WASTED",
            "IN IMAGE",
            "RATIO",
            "DUP CHUNKS",
            "BLOB",
        ],
        (
            [
                lf.index,
                _tally(lf.added),
                _tally(lf.modified),
                _tally(lf.removed),
                _size(lf.stored_bytes),
                _size(lf.wasted_bytes),
                lf.final_entries,
                f"{lf.compression_ratio:.2f}x",
                f"{lf.duplicate_chunks} ({_size(lf.duplicate_bytes)})",
                lf.blob_id[:19],
            ]
            for lf in a.layers
        ),
        right={0, 6},
    )
    if a.whiteouts:
        print()
        print("whiteouts (each acts on the layers below it):")
        for w in a.whiteouts:
            print(f"  layer {w.layer}: {w}")
    if a.wasted:
        print()
        shown = a.wasted[: args.top]
        print(f"wasted files, largest first ({len(shown)} of {len(a.wasted)}):")
        for w in shown:
            print(f"  {_size(w.size):>10}  {w.path}  (layer {w.layer}, {w.how} by layer {w.by})")
    if a.directories:
        print()
        dirs = sorted(a.directories, key=lambda d: -d["file_bytes"])[: args.top]
        print(
            f"compression by top-level directory of the final image, largest first ({len(dirs)} of "
            f"{len(a.directories)}):"
        )
        for d in dirs:
            ratio = f"{d['compression_ratio']:.2f}x"
            print(f"  {ratio:>8}  {_size(d['file_bytes']):>10}  {d['path']}")
    print()
    print(
        f"efficiency: {img['efficiency']:.4f} (1 - wasted {_size(img['wasted_bytes'])} / stored "
        f"{_size(img['stored_bytes'])} in all layers); user wasted: {img['user_wasted_fraction']:.2%}"
    )
    print(
        f"duplicate chunks: {plural(img['duplicate_chunks'], 'chunk')}, {_size(img['duplicate_chunk_bytes'])} "
        "compressed (what a chunk dictionary shared by the layers would save)"
    )
    print(f"compression: {img['compression_ratio']:.2f}x over the chunks all layers store")
    print(f"prefetch: {img['prefetch_coverage']:.1%} of the final image's file bytes ({a.prefetch_source})")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "analyze",
        help="per-layer report of an image: added, modified, removed, wasted bytes, duplicate chunks, efficiency",
        description="A dive-style analysis of a nydus image: for each layer the files it adds, modifies and "
        "removes (whiteouts explained), the bytes no path of the final image reaches, chunks stored again by "
        "an upper layer, compression, and the prefetch table's coverage. The README defines each figure.",
    )
    s.add_argument(
        "image",
        nargs="+",
        metavar="IMAGE",
        help="the OCI layout of a converted nydus image, its layer blobs (lowest first), or a merged bootstrap",
    )
    s.add_argument("--blob-dir", metavar="DIR", help="where a merged bootstrap's layer blobs live")
    s.add_argument(
        "--blob", metavar="FILE", action="append", help="a layer blob of a merged bootstrap (repeatable)"
    )
    s.add_argument(
        "--top",
        type=int,
        default=20,
        metavar="N",
        help="how many wasted files and directories to list (default 20)",
    )
    s.add_argument(
        "--json", action="store_true", help="everything as one JSON document, each path's layer included"
    )
    s.add_argument("--no-origins", action="store_true", help="with --json: leave out the path -> layer list")
    s.set_defaults(func=cmd_analyze)


__all__ = ["cmd_analyze", "register"]
