"""The ``nydus-inspect`` command line: parse arguments, call operations, print.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or unreadable input. Errors are
one line on stderr; no traceback reaches a user (set NYDUS_INSPECT_DEBUG=1 to
see one for a bug report).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator

from .errors import NydusInspectError

PROG = "nydus-inspect"


# ---------------------------------------------------------------------------- output helpers
def json_text(obj: object, indent: int | None = None) -> str:
    """Valid UTF-8 JSON: names that are not UTF-8 (surrogate escapes) are written as \\udcXX escapes."""
    import json  # imported here: commands that print no JSON start faster

    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, indent=indent, ensure_ascii=True)
    return text


def print_json(obj: object) -> None:
    sys.stdout.write(json_text(obj, indent=2))
    sys.stdout.write("\n")


def _write_json_array(items: Iterable[object], depth: int, indent: int | None) -> None:
    """Write a JSON array nested ``depth`` levels deep (two spaces a level) one element at a time, each
    element compact or, with ``indent``, laid out as ``json.dumps`` lays out a nested value."""
    w = sys.stdout.write
    pad = "\n" + "  " * (depth + 1)
    first = True
    w("[")
    for item in items:
        w(pad if first else "," + pad)
        text = json_text(item, indent=indent)
        w(text.replace("\n", pad) if indent else text)
        first = False
    if not first:
        w("\n" + "  " * depth)
    w("]")


class StreamedArray:
    """A value of a report for :func:`print_json_streaming` to write one element at a time (the report holds
    the iterable, not the elements)."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[object]) -> None:
        self.items = items


def print_json_streaming(obj: dict) -> None:
    """``print_json`` of ``obj``, each top-level value that is a :class:`StreamedArray` written one element at
    a time: a report with a list of every path of an image is never whole in memory, text or objects. The
    text is the one ``print_json`` writes of the lists themselves (unless a name that is not UTF-8 makes it
    escape every name: the rest of the document and each element then choose their escapes on their own)."""
    markers: dict[str, Iterable[object]] = {}
    flat = {}
    for k, v in obj.items():
        if isinstance(v, StreamedArray):
            # A string no value can hold (paths hold no NUL): its JSON text is found and replaced below.
            marker = f"\0streamed array {len(markers)}\0"
            markers[json_text(marker)] = v.items
            v = marker
        flat[k] = v
    text = json_text(flat, indent=2)
    w = sys.stdout.write
    pos = 0
    for marker, items in markers.items():
        at = text.index(marker, pos)
        w(text[pos:at])
        _write_json_array(items, 1, 2)
        pos = at + len(marker)
    w(text[pos:])
    w("\n")


def stream_json_array(items: Iterable[dict]) -> None:
    """Write a JSON array one element at a time (constant memory for huge listings)."""
    _write_json_array(items, 0, None)
    sys.stdout.write("\n")


def print_table(headers: list[str], rows: Iterable[list[object]], right: set[int] | None = None) -> None:
    rows = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right = right or set()

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ).rstrip()

    print(fmt(headers))
    for row in rows:
        print(fmt(row))


def print_kv(pairs: list[tuple[str, object]], indent: str = "") -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print(f"{indent}{k.ljust(width)}  {v}")


#: Nouns whose plural is not the noun with an s.
_PLURALS = {"entry": "entries", "difference": "differences"}


def plural(n: int, noun: str) -> str:
    """``1 chunk``, ``2 chunks``, ``0 entries``."""
    return f"{n} {noun if n == 1 else _PLURALS.get(noun, noun + 's')}"


def text_value(value: object) -> str:
    """A value for a human line: lists joined with commas, bytes as text (or 0x hex), never a Python repr."""
    if isinstance(value, list | tuple):
        return ", ".join(text_value(v) for v in value) or "-"
    if isinstance(value, bytes):
        return xattr_value(value)
    if value is None:
        return "-"
    return str(value)


def xattr_value(value: bytes) -> str:
    """An xattr value as getfattr prints it: printable text in double quotes, anything else as 0x hex."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable() and '"' not in text:
        return f'"{text}"'
    return "0x" + value.hex()


def mode_string(node) -> str:
    return stat.filemode(node.mode)


def _mtime(ts: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return str(ts)


# ---------------------------------------------------------------------------- commands
def _estargz_toc(layer, as_json: bool) -> int:
    """An eStargz layer's TOC entries, with where each one's data lies in the blob."""
    from .estargz import toc_entries

    index = layer.estargz_index
    entries = toc_entries(index)
    if as_json:
        print_json(
            {
                "path": layer.path,
                "source": "estargz",
                "toc_offset": index.footer.toc_offset,
                "toc_digest": "sha256:" + index.toc.digest.hex(),
                "entries": entries,
            }
        )
        return 0
    print_table(
        ["#", "TYPE", "OFFSET", "INNER", "STORED", "CHUNK_OFFSET", "SIZE", "CHUNK_DIGEST", "NAME"],
        (
            [
                e["index"],
                e["type"],
                e.get("offset", "-"),
                e.get("inner_offset", 0) if "stored_size" in e else "-",
                e.get("stored_size", "-"),
                e.get("chunk_offset", "-"),
                e.get("chunk_size", e.get("size", "-")),
                e.get("chunk_digest", "-"),
                e["name"],
            ]
            for e in entries
        ),
        right={0, 2, 3, 4, 5, 6},
    )
    print(f"toc digest: sha256:{index.toc.digest.hex()} (TOC at offset {index.footer.toc_offset})")
    return 0


def _open(args):
    from .layer import open_layer

    return open_layer(args.layer, blob_dir=getattr(args, "blob_dir", None), blobs=getattr(args, "blob", None))


def cmd_info(args) -> int:
    from .query import info

    with _open(args) as layer:
        data = info(layer)
        boot = data.get("bootstrap")
        if boot and not args.json and boot.get("version") == 6:
            from .query import blob_id_text

            for b in boot["blobs"]:
                b["blob_id_text"] = blob_id_text(layer, b["index"])
    if args.json:
        print_json(data)
        return 0
    if "layers" in data:
        # An image of several EROFS layers, overlaid: each layer as info says it of its file.
        n = len(data["layers"])
        print_kv([("path", data["path"]), ("kind", data["kind"]), ("layers", f"{n} (lowest first)")])
        for i, one in enumerate(data["layers"]):
            print(f"\nlayer {i + 1} of {n}: {one['digest']} ({one['media_type']})")
            _print_info(one)
        return 0
    _print_info(data)
    return 0


def _print_info(data: dict) -> None:
    print_kv(
        [
            ("path", data["path"]),
            ("kind", data["kind"]),
            ("size", data["size"]),
            ("sha256", data["sha256"] or "- (not hashed: `verify` decodes every frame)"),
        ]
    )
    for note in data.get("notes", []):
        print(f"note: {note}")
    if "toc" in data:
        t = data["toc"]
        print(f"toc: {plural(t['entries'], 'entry')}, {t['size']} bytes, digest {t['digest']}")
    if "blob_meta" in data:
        h = data["blob_meta"]
        print(
            f"blob.meta: {plural(h['ci_entries'], 'chunk')}, ci {h['ci_compressor']} at {h['ci_offset']} "
            f"({h['ci_compressed_size']} -> {h['ci_uncompressed_size']} bytes), features {h['features']} "
            f"({', '.join(h['features_names'])})"
        )
    if "estargz" in data:
        z = data["estargz"]
        print(
            f"estargz: {z['footer']} footer, TOC at {z['toc_offset']} ({z['toc_size']} bytes JSON, digest "
            f"{z['toc_digest']}), {plural(z['entries'], 'entry')}, {plural(z['files'], 'file')}, "
            f"{plural(z['chunks'], 'chunk')}"
        )
    if "erofs" in data:
        e = data["erofs"]
        print("image: plain EROFS")
        print_kv(
            [
                ("block size", e["block_size"]),
                ("inodes", e["inodes"]),
                ("blocks", e["blocks"]),
                ("root nid", e["root_nid"]),
                ("meta blkaddr", e["meta_blkaddr"]),
                ("xattr blkaddr", e["xattr_blkaddr"]),
                ("compat", f"{e['feature_compat']} ({', '.join(e['feature_compat_names'])})"),
                ("incompat", f"{e['feature_incompat']} ({', '.join(e['feature_incompat_names'])})"),
                ("compr algs", ", ".join(e["compression_algorithms"]) or "-"),
                (
                    "compr cfgs",
                    "; ".join(
                        f"{alg}: " + ", ".join(f"{k} {v}" for k, v in cfg.items())
                        for alg, cfg in e.get("compression_configs", {}).items()
                    )
                    or "-",
                ),
                ("uuid", e["uuid"]),
                ("volume name", e["volume_name"] or "-"),
                # Data on an extra device (a --tar=i index's tar, a --blobdev file) is read from --blob FILE.
                (
                    "devices",
                    "; ".join(
                        f"{d['device']}: {d['blocks']} blocks" + (f" ({d['tag']})" if d["tag"] else "")
                        for d in e["devices"]
                    )
                    or "-",
                ),
            ],
            indent="  ",
        )
    if "seekable" in data:
        t = data["seekable"]
        print(
            f"seekable: {plural(t['frames'], 'zstd frame')} of {t['chunk_size']} bytes, chunk table at "
            f"{t['chunk_table_offset']} ({t['hash']}), dm-verity "
            + (
                "none"
                if t["dm_verity_offset"] is None
                else f"at {t['dm_verity_offset']} ({t['dm_verity_size']} bytes)"
            )
        )
        print(f"  stored size         {t['stored_size']}")
        print(f"  chunk table digest  {t['chunk_table_digest']}")
        if t["dm_verity_root_digest"]:
            print(f"  dm-verity root      {t['dm_verity_root_digest']} (as its tree records it)")
    boot = data.get("bootstrap")
    if boot:
        print(f"bootstrap: RAFS v{boot['version']}")
        sb = boot["superblock"]
        if boot["version"] == 6:
            ext = boot["ext_superblock"]
            print_kv(
                [
                    ("inodes", sb["inodes"]),
                    ("root nid", sb["root_nid"]),
                    ("meta blkaddr", sb["meta_blkaddr"]),
                    ("flags", f"{ext['flags']} ({', '.join(ext['flags_names'])})"),
                    ("compressor", ext["compressor"]),
                    ("digester", ext["digester"]),
                    ("chunk size", f"{ext['chunk_size']:#x}"),
                    (
                        "chunk table",
                        f"{plural(ext['chunk_table_entries'], 'entry')} at {ext['chunk_table_offset']}",
                    ),
                    ("prefetch", " ".join(map(str, boot["prefetch"])) or "-"),
                ],
                indent="  ",
            )
        else:
            print_kv(
                [
                    ("inodes", sb["inodes"]),
                    ("flags", f"{sb['flags']} ({', '.join(sb['flags_names'])})"),
                    ("chunk size", f"{sb['chunk_size']:#x}"),
                ],
                indent="  ",
            )
        blobs = boot["blobs"]
        print(f"blob table: {plural(len(blobs), 'blob')}")
        for b in blobs:
            bid = b.get("blob_id_text") or b.get("blob_id_resolved", b["blob_id"])
            if boot["version"] == 5:
                print(f"  [{b['index']}] {bid}")
                continue
            print(f"  [{b['index']}] {bid}")
            print_kv(
                [
                    (
                        "chunks",
                        f"{b['chunk_count']} x {b['chunk_size']:#x}, {b['compressor']}, {b['digester']}",
                    ),
                    ("sizes", f"compressed {b['compressed_size']}, uncompressed {b['uncompressed_size']}"),
                    ("features", f"{b['features']} ({', '.join(b['features_names'])})"),
                    (
                        "blob.meta",
                        f"{b['ci_compressor']} at {b['ci_offset']}, {b['ci_compressed_size']} -> "
                        f"{b['ci_uncompressed_size']} bytes",
                    ),
                    ("toc", f"{b['blob_toc_size']} bytes, digest {b['blob_toc_digest']}"),
                ],
                indent="      ",
            )


def cmd_toc(args) -> int:
    from .query import toc_report

    with _open(args) as layer:
        if layer.kind == "estargz":
            return _estargz_toc(layer, args.json)
        rep = toc_report(layer)
    if args.json:
        print_json(rep)
        return 0
    for note in rep["notes"]:
        print(f"note: {note}")
    print_table(
        ["NAME", "COMPRESSOR", "OFFSET", "STORED", "SIZE", "SHA256"],
        (
            [
                e["name"],
                e["compressor"],
                e["compressed_offset"],
                e["compressed_size"],
                e["uncompressed_size"],
                e["sha256"] or "-",
            ]
            for e in rep["entries"]
        ),
        right={2, 3, 4},
    )
    if rep["toc_digest"]:
        print(f"toc digest: {rep['toc_digest']} ({rep['toc_size']} bytes)")
    else:
        print("no ToC: entries from the tar-header walk")
    return 0


def cmd_entry(args) -> int:
    with _open(args) as layer:
        if args.raw:
            chunks: Iterable[bytes] = [layer.entry_raw(args.name)]
        else:
            chunks = layer.iter_entry(args.name)
        _write_stream(chunks, args.output)
    return 0


def _write_stream(chunks: Iterable[bytes], output: str | None) -> None:
    from .fsutil import atomic_output

    if output and output != "-":
        with atomic_output(output) as f:
            for c in chunks:
                f.write(c)
    else:
        out = sys.stdout.buffer
        for c in chunks:
            out.write(c)
        out.flush()


def cmd_chunks(args) -> int:
    from .query import chunks_report

    with _open(args) as layer:
        it = chunks_report(layer)
        head = next(it)
        if args.json:
            import json

            w = sys.stdout.write
            w(f'{{"source": {json.dumps(head["source"])}, "header": {json.dumps(head["header"])}, ')
            if "zran" in head:
                w(f'"zran": {json.dumps(head["zran"])}, ')
            w('"chunks": ')
            stream_json_array(it)
            w("}\n")
            return 0
        print(f"source: {head['source']}")
        for k, v in head["header"].items():
            print(f"  {k}: {text_value(v)}")
        if "zran" in head:
            print(f"zran contexts: {len(head['zran'])}")
            cols = [
                "index",
                "in_offset",
                "in_len",
                "out_offset",
                "out_len",
                "dict_size",
                "ctx_bits",
                "ctx_byte",
            ]
            print_table(
                [c.upper() for c in cols], ([z[c] for c in cols] for z in head["zran"]), right=set(range(8))
            )
        print_table(
            ["INDEX", "C.OFFSET", "C.SIZE", "U.OFFSET", "U.SIZE", "COMP", "DIGEST"],
            (
                [
                    c["index"],
                    c["compressed_offset"],
                    c["compressed_size"],
                    c["uncompressed_offset"],
                    c["uncompressed_size"],
                    "yes" if c["compressed"] else "no",
                    c.get("digest") or "-",
                ]
                for c in it
            ),
            right={0, 1, 2, 3, 4},
        )
    return 0


def cmd_ls(args) -> int:
    from .model import fsdecode
    from .query import list_nodes

    with _open(args) as layer:
        nodes = list_nodes(
            layer, args.path, args.recursive, with_chunks=args.chunks, follow=not args.no_dereference
        )
        if args.json:
            stream_json_array(n.to_json(with_chunks=args.chunks) for n in nodes)
            return 0
        for n in nodes:
            name = fsdecode(n.path)
            if not args.long:
                print(name)
                continue
            size = f"{os.major(n.rdev)},{os.minor(n.rdev)}" if n.type in ("char", "block") else str(n.size)
            line = f"{mode_string(n)} {n.nlink:>3} {n.uid:>5} {n.gid:>5} {size:>10} {_mtime(n.mtime)} {name}"
            if n.target is not None:
                line += f" -> {fsdecode(n.target)}"
            if n.hardlink is not None:
                line += f"  [hardlink group {n.hardlink}]"
            print(line)
            for k, v in sorted(n.xattrs.items()):
                print(f"    xattr {fsdecode(k)}={xattr_value(v)}")
            if args.chunks and n.chunks:
                for c in n.chunks:
                    print(
                        f"    chunk @{c.file_offset}: blob {c.blob_index} #{c.ci_index} "
                        f"c[{c.compressed_offset}+{c.compressed_size}] u[{c.uncompressed_offset}+{c.uncompressed_size}] "
                        f"{c.digest.hex()}"
                    )
    return 0


def cmd_cat(args) -> int:
    from .query import cat

    with _open(args) as layer:
        _write_stream(cat(layer, args.path, follow=not args.no_dereference), args.output)
    return 0


# ---------------------------------------------------------------------------- parser
def _layer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "layer", metavar="LAYER", help="nydus layer blob, RAFS bootstrap, or bootstrap layer (tar/tar.gz)"
    )
    p.add_argument(
        "--blob-dir", metavar="DIR", help="where blob files named by blob id live (default: beside LAYER)"
    )
    p.add_argument("--blob", metavar="FILE", action="append", help="a blob file (repeatable)")
    from .imageref import add_arguments

    add_arguments(p)


def _no_dereference(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-P",
        "--no-dereference",
        action="store_true",
        help="if PATH ends in a symlink, name the link itself (symlinks before it are still followed)",
    )


class _OnlyCommand:
    """Sub-parsers that build only the command about to run: the others are skipped, which saves a
    noticeable part of a short command's start-up (argparse is slow to build twenty parsers)."""

    def __init__(self, sub, wanted: str) -> None:
        self.sub = sub
        self.wanted = wanted
        self.found = False

    def add_parser(self, name: str, **kw):
        if name == self.wanted:
            self.found = True
            return self.sub.add_parser(name, **kw)
        return _Skipped()


class _Skipped:
    """Takes every parser call for a command that is not being run, and does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kw: self


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; or, given the arguments, one that builds only their command (when known)."""
    wanted = next((a for a in argv or () if not a.startswith("-")), None)
    if wanted is not None:
        parser, sub = _parser_base()
        only = _OnlyCommand(sub, wanted)
        _add_commands(only)
        if only.found:
            return parser
    parser, sub = _parser_base()
    _add_commands(sub)
    return parser


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized to the terminal the way it sizes itself, without the import of shutil it
    makes for that: argparse builds one per argument added, so the import lands on every command's start."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", "0"))
            except ValueError:
                width = 0
            if width <= 0:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 0
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help (and that of its sub-commands) uses :class:`_Formatter`."""

    def __init__(self, *args, **kw) -> None:
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)


def _parser_base():
    p = _Parser(prog=PROG, description="Inspect, pack, unpack and verify Nydus (RAFS v6) layers.")
    p.add_argument("--version", action=_VersionAction)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p, p.add_subparsers(dest="command", metavar="COMMAND")


def _add_commands(sub) -> None:

    s = sub.add_parser("info", help="what a layer is: superblocks, blob table, ToC summary")
    _layer_args(s)
    s.set_defaults(image_data=False)  # a reference: the bootstrap is enough, data blobs are not read
    s.add_argument("--json", action="store_true", help="the same facts as one JSON document")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("toc", help="the blob's table of contents (or its tar sections)")
    _layer_args(s)
    s.add_argument("--json", action="store_true", help="the entries and the ToC digest as JSON")
    s.set_defaults(func=cmd_toc)

    s = sub.add_parser("entry", help="extract one blob entry, decompressed and checked")
    _layer_args(s)
    s.add_argument(
        "name",
        metavar="NAME",
        help="image.boot, blob.meta, blob.meta.header, blob.digest, image.blob, rafs.blob.toc",
    )
    s.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    s.add_argument("--raw", action="store_true", help="the stored (compressed) bytes, unchecked")
    s.set_defaults(func=cmd_entry)

    s = sub.add_parser("chunks", help="blob.meta header and chunk records (or the bootstrap chunk table)")
    _layer_args(s)
    s.add_argument("--json", action="store_true", help="the header and every chunk record as JSON (streamed)")
    s.set_defaults(func=cmd_chunks)

    s = sub.add_parser("ls", help="list the file tree of the bootstrap")
    _layer_args(s)
    s.add_argument("path", nargs="?", default="/", metavar="PATH", help="a path in the image (default /)")
    _no_dereference(s)
    s.add_argument("-R", "--recursive", action="store_true")
    s.add_argument("-l", "--long", action="store_true", help="mode, links, owner, size, mtime, link target")
    s.add_argument("--chunks", action="store_true", help="with -l or --json: each file's chunks")
    s.add_argument("--json", action="store_true", help="a JSON array, streamed")
    s.set_defaults(func=cmd_ls)
    s.set_defaults(image_data=False)  # a reference: the bootstrap is enough, data blobs are not read

    s = sub.add_parser("cat", help="a file's bytes, read chunk by chunk and checked against chunk digests")
    _layer_args(s)
    s.add_argument("path", metavar="PATH", help="a regular file in the image (symlinks on the way followed)")
    _no_dereference(s)
    s.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    s.set_defaults(func=cmd_cat)

    if not (isinstance(sub, _OnlyCommand) and sub.found):  # a built-in command needs no other module
        _register_extra(sub)


#: Modules that add sub-commands; each has ``register(subparsers)`` and imports its heavy dependencies
#: (pyfuse3, trio, textual) only when its command runs, so that `info` stays fast.
COMMAND_MODULES = ("nydus_inspect.cli_ops", "nydus_inspect.cli_analyze", "nydus_inspect.mount.cli", "tui.cli")


def _register_extra(sub) -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that front end is not written yet
            raise
        module.register(sub)


class _VersionAction(argparse.Action):
    """``--version``, looking the version up only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings, dest, **kw) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        sys.stdout.write(f"{PROG} {_version()}\n")  # on stdout, as argparse's own version action writes it
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nydus-inspect")
    except Exception:
        return "0+unknown"


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _tolerant_stdout()
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _warnings_to_stderr(getattr(args, "quiet", False))
    try:
        from . import imageref

        imageref.configure(args)
        try:
            with _bulk_process(getattr(args, "bulk", False)):
                return args.func(args) or 0
        finally:
            if getattr(args, "stats", False) and imageref.OPTIONS.stats is not None:
                sys.stderr.write(imageref.stats_line() + "\n")
    except NydusInspectError as exc:
        _error(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (| head); exit quietly, as cat does.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        _error(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        return 2
    except Exception as exc:  # a bug: keep it to one line, unless debugging
        if os.environ.get("NYDUS_INSPECT_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (set NYDUS_INSPECT_DEBUG=1 for a traceback)")
        return 3


#: While Python threads share work with C code that drops the GIL, let them hand the GIL over after this
#: long instead of the default 5 ms: a worker back from compressing or decoding otherwise waits behind a
#: main thread busy in Python (pack's tar parsing, unpack's layout, verify's bootstrap walk).
SWITCH_INTERVAL = 0.001


@contextlib.contextmanager
def _bulk_process(bulk: bool) -> Iterator[None]:
    """For a bulk command (pack, unpack, verify, convert: ``bulk`` set by its parser), the process is tuned
    for the job: the GIL changes hands after SWITCH_INTERVAL, and the cyclic garbage collector is off.

    These jobs make one object or more per tar entry and per chunk, and keep most of them to the end (the
    tree, the chunk list), so each collection walks a heap that keeps growing, while holding the GIL that
    the workers need. What they make is freed by reference counting (no cycles per entry or per chunk), so
    memory stays bounded. This is the program's choice, made here: the library called from Python leaves the
    interpreter as it found it."""
    if not bulk:
        yield
        return
    interval, collecting = sys.getswitchinterval(), gc.isenabled()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
    gc.disable()
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()


def run() -> None:
    """The command-line entry point (``nydus-inspect``, ``python -m nydus_inspect``): :func:`main`, then a
    quick exit.

    Once a command is done, Python's own exit would free every object the command made, one by one (tens of
    milliseconds after a pack or unpack of a real layer: as long as some peers take for the whole job). The
    process leaves without that, once the work a normal exit does first is done: no other thread still runs,
    atexit handlers (logging's flush among them) have run, and stdout and stderr are flushed (stdout that
    cannot be written, a full disk say, is an error and exit status 2). Outputs are closed by the commands
    themselves before they return."""
    code = main()
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)  # a thread still runs: let the interpreter wait for it as usual
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader went away: quiet, as for a closed pipe during the command
    except OSError as exc:  # what is left in the buffer cannot be written: say so, and fail
        _error(f"standard output: {exc.strerror or exc}")
        code = code or 2
    except ValueError:  # closed by the command
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def _tolerant_stdout() -> None:
    """Names in an image are bytes: print the non-UTF-8 ones as they are instead of failing on a strict stdout."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="surrogateescape")
        except (ValueError, OSError):
            pass


def _warnings_to_stderr(quiet: bool) -> None:
    """What the library logs at WARNING and above (a registry that cannot be reached and the cached manifest
    used instead, a tar member pack changes) is said on stderr, once, as ``nydus-inspect: warning: ...``;
    with ``--quiet`` only errors are. The mount daemon sets its own."""
    import logging

    class Said(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"

    logger = logging.getLogger("nydus_inspect")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.ERROR if quiet else logging.WARNING)
        handler.setFormatter(Said())
        logger.addHandler(handler)


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message.splitlines()[0] if message else 'unknown error'}\n")


if __name__ == "__main__":
    sys.exit(main())
