"""The ``mount`` and ``umount`` sub-commands (pyfuse3 and trio are imported only when they run)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError


def cmd_mount(args) -> int:
    from .daemon import MountOptions, check_mountpoint, parse_size, run_daemon, run_foreground

    # Options may come after the layers (argparse stops at the first positional of a sub-command): the
    # rest of the line is parsed again here, options and positionals intermixed.
    again = argparse.ArgumentParser(
        prog="nydus-inspect mount", usage="nydus-inspect mount [options] LAYER... MOUNTPOINT", add_help=False
    )
    _options(again)
    again.add_argument("paths", nargs="*")
    again.parse_intermixed_args(args.paths, namespace=args)
    from .. import imageref

    imageref.configure(args)  # image reference options may have come after the layers
    if len(args.paths) < 2:
        raise UsageError("mount needs LAYER... MOUNTPOINT (at least one layer, then the mount point)")
    opts = MountOptions(
        layers=args.paths[:-1],
        mountpoint=args.paths[-1],
        blob_dir=args.blob_dir,
        blobs=args.blob or [],
        cache_size=parse_size(args.cache_size),
        foreground=args.foreground,
        allow_other=args.allow_other,
        log_file=args.log_file,
        readahead=not args.no_readahead,
        workers=args.workers,
        debug=args.debug,
        raw_whiteouts=args.raw_whiteouts,
    )
    check_mountpoint(opts.mountpoint)  # a mount point that cannot be used is an error before any warning
    warn_if_not_empty(opts.mountpoint)
    return run_foreground(opts) if opts.foreground else run_daemon(opts)


def cmd_umount(args) -> int:
    from .daemon import unmount

    unmount(args.mountpoint, timeout=args.timeout, lazy=args.lazy)
    return 0


def warn_if_not_empty(mountpoint: str) -> None:
    """Mounting over files hides them until the unmount: say so (mount(8) says nothing, and users lose
    track of what they put there)."""
    try:
        with os.scandir(mountpoint) as it:
            first = next(it, None)
    except OSError:
        return  # not a directory, or unreadable: the mount itself says what is wrong
    if first is not None:
        sys.stderr.write(
            f"nydus-inspect: warning: {mountpoint} is not empty ({first.name} and maybe more): what it holds "
            "is hidden while the mount is there\n"
        )


def _options(s) -> None:
    s.add_argument(
        "--blob-dir", metavar="DIR", help="where blob files named by blob id live (default: beside LAYER)"
    )
    s.add_argument("--blob", metavar="FILE", action="append", help="a blob file (repeatable)")
    s.add_argument(
        "-f", "--foreground", action="store_true", help="serve in this process until unmounted or Ctrl-C"
    )
    s.add_argument(
        "--cache-size",
        default="256M",
        metavar="SIZE",
        help="memory for decompressed chunks (default 256M; K, M, G suffixes)",
    )
    s.add_argument(
        "--log-file",
        metavar="FILE",
        help="where the daemon logs (default: stderr with --foreground, else syslog or, without one, "
        "/run/nydus-inspect/MOUNTPOINT.log; `getfattr -n user.nydus.mount.log MOUNTPOINT` says which)",
    )
    s.add_argument(
        "--allow-other", action="store_true", help="let other users see the mount (FUSE allow_other)"
    )
    s.add_argument(
        "--no-readahead",
        action="store_true",
        help="decode only what is read (no next chunk, no following small files)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="threads decompressing chunks (default: one per CPU, at least 2)",
    )
    s.add_argument(
        "--raw-whiteouts",
        action="store_true",
        help="show a single layer's whiteout files (.wh.NAME, .wh..wh..opq) as stored; by default they are "
        "applied as merge applies them (they act on lower layers only, so they are hidden)",
    )
    s.add_argument("--debug", action="store_true", help="log every FUSE request (libfuse debug output)")
    from ..imageref import add_arguments

    add_arguments(s, stats=False)  # a docker:// reference is mounted lazily; its byte counts are xattrs


def register(sub) -> None:
    s = sub.add_parser(
        "mount",
        usage="nydus-inspect mount [options] LAYER... MOUNTPOINT",
        help="mount layers with FUSE: MOUNTPOINT/entries/ (blob entries) and MOUNTPOINT/rootfs/ (the file tree)",
        description="Mount one or more nydus layers read-only. MOUNTPOINT/entries/<file>/ holds each ToC entry "
        "(decompressed; raw/ stored), with JSON sidecars and user.nydus.* xattrs; MOUNTPOINT/rootfs/ is the file "
        "tree (several layers are merged, lowest first, with OCI whiteouts). Runs in the background and returns "
        "once the mount answers, printing the mount point; stop it with `nydus-inspect umount MOUNTPOINT`.",
    )
    s.add_argument(
        "paths",
        nargs=argparse.REMAINDER,
        metavar="LAYER... MOUNTPOINT",
        help="nydus layer blobs or bootstraps (lowest first), a nydus image's OCI layout, or one plain EROFS "
        "image (mkfs.erofs, served as stored); then a directory",
    )
    _options(s)
    s.set_defaults(func=cmd_mount)

    s = sub.add_parser("umount", help="unmount a nydus-inspect mount and wait for its daemon to exit")
    s.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the mount is")
    s.add_argument(
        "-l",
        "--lazy",
        action="store_true",
        help="detach a busy mount now and stop its daemon (open files then fail with ENOTCONN)",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the daemon to exit before stopping it (default 10)",
    )
    s.set_defaults(func=cmd_umount)
