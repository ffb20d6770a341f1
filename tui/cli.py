"""The ``tui`` sub-command: ``nydus-inspect tui LAYER... [--blob-dir DIR] [--blob FILE] [--source TAR]``.

Registered by nydus_inspect.cli; textual is imported only when the command runs, so other commands stay
fast. The layers are opened (and bad input reported, exit 2) before the terminal is taken over.
"""

from __future__ import annotations


def cmd_tui(args) -> int:
    from nydus_inspect import UsageError, open_layer

    if args.source is not None:
        from nydus_inspect.tarstream import check_tar_input

        check_tar_input(args.source, "--source")
    layers = []
    try:
        for path in args.layers:
            layers += tui_layers(open_layer(path, blob_dir=args.blob_dir, blobs=args.blob))
        try:
            from .app import NydusApp
        except ModuleNotFoundError as exc:
            raise UsageError(f"the TUI needs textual ({exc}); install nydus-inspect[tui]") from None
        NydusApp(layers, source=args.source, freeze_heap=True).run()
    finally:
        for layer in layers:
            layer.close()
    return 0


def tui_layers(opened) -> list:
    """The layers the TUI shows for what ``open_layer`` opened: an image of several EROFS layers is shown layer
    by layer (the keys that switch layers go through them), as several nydus layers given together are; its
    overlaid tree is what ls, cat and mount read."""
    from nydus_inspect.overlay import LayerStack

    return list(opened.layers) if isinstance(opened, LayerStack) else [opened]


def register(sub) -> None:
    s = sub.add_parser("tui", help="browse and verify layers interactively (a Textual app)")
    s.add_argument(
        "layers",
        nargs="+",
        metavar="LAYER",
        help="layer(s): nydus blobs, bootstraps or bootstrap layers, EROFS images, OCI layouts, image references",
    )
    s.add_argument(
        "--blob-dir", metavar="DIR", help="where blob files named by blob id live (default: beside LAYER)"
    )
    s.add_argument("--blob", metavar="FILE", action="append", help="a blob file (repeatable)")
    s.add_argument(
        "--source", metavar="LAYER.tar", help="source tar: the verify screen adds the round-trip check"
    )
    from nydus_inspect.imageref import add_arguments

    add_arguments(s, stats=False)  # a docker:// reference is read lazily, as by the other commands
    s.set_defaults(func=cmd_tui)
