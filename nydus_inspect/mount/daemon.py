"""Mount, serve, daemonize and unmount.

``mount`` forks by default: the child opens the layers, mounts, starts serving and checks the mount end to end
(a stat of the mount point answered by itself) before it tells the parent, through a pipe, "OK" or its one-line
error. The parent prints the mount point and exits 0 only then (2 with the child's error otherwise), so a script
can use the mount as soon as the command returns. The daemon unmounts on SIGINT, SIGTERM and SIGHUP and when
someone else unmounts it; it answers ``user.nydus.mount.pid`` on the mount root, which ``umount`` uses to wait
for it to exit.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import NydusInspectError, UsageError
from ..units import parse_size  # noqa: F401  (re-exported: mount options and tests use it from here)

log = logging.getLogger("nydus_inspect.mount")

FSTYPE = "fuse.nydus-inspect"
#: How long `mount` waits for the daemon to be ready, and `umount` for it to exit.
READY_TIMEOUT = 120.0
EXIT_TIMEOUT = 10.0
#: The kernel readahead window of a mount, in KiB (see set_readahead).
READ_AHEAD_KB = 4096


@dataclass
class MountOptions:
    layers: list[str]
    mountpoint: str
    blob_dir: str | None = None
    blobs: list[str] = field(default_factory=list)
    cache_size: int = 256 << 20
    foreground: bool = False
    allow_other: bool = False
    log_file: str | None = None
    readahead: bool = True
    workers: int = 0
    debug: bool = False
    raw_whiteouts: bool = False


# ---------------------------------------------------------------------------- mount table
@dataclass
class MountEntry:
    mountpoint: str
    fstype: str
    source: str


def _unescape(field_: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 4 <= len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def find_mount(mountpoint: str) -> MountEntry | None:
    """The last (topmost) mount at ``mountpoint`` in this mount namespace, or None."""
    want = os.path.realpath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 10 or "-" not in parts:
                    continue
                sep = parts.index("-")
                mp = _unescape(parts[4])
                if mp == want:
                    found = MountEntry(mp, parts[sep + 1], _unescape(parts[sep + 2]))
    except OSError:
        return None
    return found


# ---------------------------------------------------------------------------- serving
def _setup_logging(opts: MountOptions, to_stderr: bool) -> None:
    logger = logging.getLogger("nydus_inspect")
    logger.setLevel(logging.DEBUG if opts.debug else logging.INFO)
    fmt = logging.Formatter("%(asctime)s nydus-inspect[%(process)d]: %(levelname)s: %(message)s")
    if opts.log_file:
        handler: logging.Handler = logging.FileHandler(opts.log_file, delay=True)
    elif to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        fmt = logging.Formatter("nydus-inspect: %(levelname)s: %(message)s")
    elif os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        handler = SysLogHandler("/dev/log")
        fmt = logging.Formatter("nydus-inspect[%(process)d]: %(levelname)s: %(message)s")
    else:
        handler = logging.NullHandler()
    handler.setFormatter(fmt)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logging.getLogger("pyfuse3").handlers[:] = [handler]
    logging.getLogger("pyfuse3").setLevel(logging.DEBUG if opts.debug else logging.WARNING)


def default_log_file(mountpoint: str) -> str:
    """Where a daemon logs when there is no --log-file and no syslog: /run/nydus-inspect/ for root, else the
    user's runtime directory, one file per mount point (its path, slashes as dashes)."""
    if os.geteuid() == 0:
        base = "/run/nydus-inspect"
    else:
        base = os.path.join(
            os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/nydus-inspect-{os.getuid()}", "nydus-inspect"
        )
    os.makedirs(base, mode=0o700, exist_ok=True)
    name = mountpoint.strip("/").replace("/", "-")[-200:] or "root"
    return os.path.join(base, name + ".log")


def check_mountpoint(path: str) -> str:
    mp = os.path.realpath(path)
    if not os.path.isdir(mp):
        raise UsageError(f"{path}: the mount point must be an existing directory")
    entry = find_mount(mp)
    if entry is not None:
        raise UsageError(f"{path}: something is mounted there already ({entry.fstype} from {entry.source})")
    return mp


#: glibc mallopt parameters (malloc.h), and what the daemon sets them to (see _tune_malloc).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20


def _tune_malloc() -> None:
    """Let the memory of decoded chunks be used again rather than given back to the kernel and asked for anew.

    By default glibc maps each allocation of 1 MiB (a chunk) on its own, or trims the heap once 2 MiB at its top
    are free: the next chunk then gets fresh pages, and the kernel zeroing and mapping them costs about as
    much CPU as decoding the chunk. Chunks come from the heap here, and up to TRIM_THRESHOLD of free memory
    stays there (per arena) for the next ones."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def serve(opts: MountOptions, on_ready: Callable[[str | None], None]) -> None:
    """Open, mount and serve until unmounted or signalled; ``on_ready(None)`` once the mount answers, or
    ``on_ready(error)`` if it never did."""
    import pyfuse3
    import trio

    from .fs import NydusFS
    from .sources import open_sources

    mp = check_mountpoint(opts.mountpoint)
    _tune_malloc()
    sources = open_sources(opts.layers, blob_dir=opts.blob_dir, blobs=opts.blobs)
    try:
        where = opts.log_file or ("stderr" if opts.foreground else "syslog")
        fs = NydusFS(
            sources,
            cache_size=opts.cache_size,
            readahead=opts.readahead,
            workers=opts.workers,
            log_where=where,
            raw_whiteouts=opts.raw_whiteouts,
        )
        fuse_options = {"ro", "default_permissions", "fsname=nydus-inspect", "subtype=nydus-inspect"}
        if opts.allow_other:
            fuse_options.add("allow_other")
        if opts.debug:
            fuse_options.add("debug")
        try:
            pyfuse3.init(fs, mp, fuse_options)
        except RuntimeError:
            raise UsageError(
                f"{opts.mountpoint}: cannot mount with FUSE (is /dev/fuse there and usable: root, or fusermount3 "
                "installed?)"
            ) from None
        log.info("mounted %s on %s (cache %d MiB)", fs.image.description, mp, opts.cache_size >> 20)
        # What is loaded by now (the bootstrap's model, modules) lives as long as the mount: keep the cyclic
        # garbage collector from walking it again and again while requests come in.
        gc.freeze()
        try:
            trio.run(_main, fs, mp, on_ready)
        finally:
            if not fs.detach():
                # A page-cache store still waits on the kernel: destroying the session under it could hang
                # this process for good. Detach the mount and leave; exiting closes the device.
                log.error("a page-cache store did not finish; detaching %s and exiting", mp)
                _fusermount(mp, lazy=True)
                logging.shutdown()
                os._exit(1)
            # After an unmount by someone else this only closes the device (libfuse sees the connection is
            # gone); after a signal it detaches the mount (lazily, so busy mounts go too).
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", mp)
    finally:
        sources.close()


async def _main(fs, mountpoint: str, on_ready: Callable[[str | None], None]) -> None:
    import pyfuse3
    import trio

    async with trio.open_nursery() as nursery:
        fs.attach()
        try:
            await nursery.start(_watch_signals, fs)
            nursery.start_soon(_announce, fs, mountpoint, on_ready)
            await pyfuse3.main(min_tasks=2, max_tasks=64)
        finally:
            nursery.cancel_scope.cancel()


async def _stop(fs) -> None:
    """Stop serving: first the page-cache feeder (while requests are still answered), then the loop."""
    import pyfuse3
    import trio

    await trio.to_thread.run_sync(fs.stop_storing, 5.0)
    pyfuse3.terminate()


async def _watch_signals(fs, task_status) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            await _stop(fs)
            return


async def _announce(fs, mountpoint: str, on_ready: Callable[[str | None], None]) -> None:
    import pyfuse3
    import trio

    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
        if st.st_ino != pyfuse3.ROOT_INODE:
            raise OSError(f"the mount point answers as inode {st.st_ino}, not as the root of this mount")
    except OSError as exc:
        on_ready(f"{mountpoint}: the new mount does not answer: {exc}")
        await _stop(fs)
        return
    set_readahead(st.st_dev, READ_AHEAD_KB)
    on_ready(None)


def set_readahead(dev: int, kib: int) -> bool:
    """Raise the kernel's readahead window of the mount (its backing device info) to ``kib`` KiB.

    FUSE starts every mount at 128 KiB, so a sequential reader asks for 128 KiB at a time; a larger window lets
    the kernel send fewer, larger read requests (up to the max_pages libfuse negotiated, 1 MiB) and ask for the
    following ones earlier. Only root may write the setting: otherwise the default stays."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(f"{kib}\n")
    except OSError as exc:
        log.debug("cannot set %s: %s", path, exc)
        return False
    return True


def run_foreground(opts: MountOptions) -> int:
    _setup_logging(opts, to_stderr=True)

    failed: list[str] = []

    def ready(error: str | None) -> None:
        if error is None:
            print(os.path.realpath(opts.mountpoint), flush=True)
        else:
            failed.append(error)

    serve(opts, ready)
    if failed:
        raise UsageError(failed[0])
    return 0


# ---------------------------------------------------------------------------- daemon
def run_daemon(opts: MountOptions) -> int:
    """Fork; the child serves, the parent returns 0 once the mount answers (2 with the child's error)."""
    check_mountpoint(opts.mountpoint)
    # The daemon works from / (so that it keeps no directory busy): make every path absolute first.
    from ..imageref import absolute

    opts.layers = [absolute(p) for p in opts.layers]
    opts.blobs = [os.path.abspath(p) for p in opts.blobs]
    opts.mountpoint = os.path.realpath(opts.mountpoint)
    if opts.blob_dir:
        opts.blob_dir = os.path.abspath(opts.blob_dir)
    if opts.log_file:
        opts.log_file = os.path.abspath(opts.log_file)
    elif not os.path.exists("/dev/log"):
        opts.log_file = default_log_file(opts.mountpoint)
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(r)
        _child(opts, w)
    os.close(w)
    message = _read_message(r, pid)
    os.close(r)
    if message == "OK":
        print(opts.mountpoint, flush=True)
        return 0
    # The child failed: reap it and pass its error on.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    raise UsageError(message)


def _read_message(fd: int, pid: int) -> str:
    buf = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return f"the mount was not ready after {READY_TIMEOUT:.0f} s; the daemon was stopped"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            _, status = os.waitpid(pid, 0)
            return f"the mount daemon exited before the mount was ready ({_status(status)})"
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode("utf-8", "replace")
    if line == "OK":
        return "OK"
    return line.removeprefix("ERR ") or "the mount daemon failed"


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _child(opts: MountOptions, w: int) -> None:
    """The daemon: never returns."""
    code = 0
    told = False

    def tell(text: str) -> None:
        nonlocal told
        if not told:
            told = True
            with contextlib.suppress(OSError):
                os.write(w, (text.replace("\n", " ") + "\n").encode("utf-8", "replace"))
                os.close(w)

    # libfuse writes its own complaints to stderr: keep them until we know whether the mount worked.
    early_err = tempfile.TemporaryFile()
    try:
        os.setsid()
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(early_err.fileno(), 2)
        os.close(null)
        _setup_logging(opts, to_stderr=False)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        def ready(error: str | None) -> None:
            if error is None:
                tell("OK")
                null2 = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null2, 2)
                os.close(null2)
            else:
                tell("ERR " + error)

        serve(opts, ready)
    except NydusInspectError as exc:
        code = exc.exit_code
        tell("ERR " + (str(exc).splitlines() or ["error"])[0] + _libfuse_said(early_err))
    except BaseException as exc:  # noqa: BLE001 - the daemon must always answer the parent
        code = 3
        log.exception("mount daemon failed")
        tell(f"ERR internal error: {type(exc).__name__}: {exc}")
    finally:
        tell("ERR the mount daemon stopped before the mount was ready")
        logging.shutdown()
        os._exit(code)


def _libfuse_said(f) -> str:
    try:
        f.seek(0)
        text = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f" ({lines[-1].strip()})" if lines else ""


# ---------------------------------------------------------------------------- umount
def daemon_pid(mountpoint: str, timeout: float = 2.0) -> int | None:
    """The pid of the daemon serving ``mountpoint`` (asked through the mount itself), or None."""
    result: list[int] = []

    def ask() -> None:
        try:
            result.append(int(os.getxattr(mountpoint, "user.nydus.mount.pid")))
        except (OSError, ValueError):
            pass

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else None


def _state(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def process_gone(pid: int) -> bool:
    """True once the process and every thread of it have exited. (A killed daemon's main thread can be a
    zombie while its other threads still exit, and until the last one has, its /dev/fuse stays open.)"""
    state = _state(f"/proc/{pid}/stat")
    if state not in (b"Z", b"X"):
        return state is None
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return all(_state(f"/proc/{pid}/task/{tid}/stat") in (None, b"Z", b"X") for tid in tids)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


def _fusermount(mp: str, lazy: bool = False) -> tuple[bool, str]:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        cmd = [tool, "-u", *(["-z"] if lazy else []), mp]
    else:
        cmd = ["umount", *(["-l"] if lazy else []), mp]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc.returncode == 0, proc.stderr.strip()


def busy_users(mountpoint: str, limit: int = 3) -> list[str]:
    """What keeps ``mountpoint`` busy, one line per process: its open files, working directory, root or
    mapped files under the mount. Read from /proc by readlink alone, which never asks the mount itself."""
    mp = mountpoint.rstrip("/") or "/"
    inside = (mp, mp + "/")

    def under(target: str) -> bool:
        return target == inside[0] or target.startswith(inside[1])

    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        holds = []
        for link, what in (("cwd", "working directory"), ("root", "root directory")):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{name}/{link}")
                if under(target):
                    holds.append(f"{what} {target}")
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{name}/fd/{fd}")
                    if under(target):
                        holds.append(f"{target} open")
        with contextlib.suppress(OSError), open(f"/proc/{name}/maps", "rb") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    target = os.fsdecode(parts[5].rstrip(b"\n"))
                    if under(target) and f"{target} mapped" not in holds:
                        holds.append(f"{target} mapped")
        if holds:
            comm = "?"
            with contextlib.suppress(OSError), open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            more = f" and {len(holds) - limit} more" if len(holds) > limit else ""
            out.append(f"pid {name} ({comm}): {', '.join(holds[:limit])}{more}")
    return out


def unmount(mountpoint: str, timeout: float = EXIT_TIMEOUT, lazy: bool = False) -> None:
    """Unmount a nydus-inspect mount and wait for its daemon to exit.

    A busy mount (open files, a working directory inside) is refused with what keeps it busy, since
    detaching it would break those processes' files (ENOTCONN). With ``lazy`` it is detached at once
    and its daemon told to stop, as ``umount -l`` does; nothing is left behind either way.
    """
    mp = os.path.realpath(mountpoint)
    entry = find_mount(mp)
    if entry is None:
        raise UsageError(f"{mountpoint}: not mounted")
    if entry.fstype != FSTYPE:
        raise UsageError(f"{mountpoint}: a {entry.fstype} mount, not one of nydus-inspect; use umount(8)")
    pid = daemon_pid(mp)
    ok, err = _fusermount(mp)
    if not ok:
        if find_mount(mp) is None:
            pass  # it went away meanwhile (the daemon stopped on a signal)
        elif not lazy:
            users = busy_users(mp)
            if not users:
                raise UsageError(f"{mountpoint}: cannot unmount: {err or 'the kernel refused'}")
            more = f"; and {len(users) - 3} more process(es)" if len(users) > 3 else ""
            raise UsageError(
                f"{mountpoint}: busy, not unmounted: {'; '.join(users[:3])}{more} "
                "(close those files or leave that directory, or detach it anyway with umount --lazy)"
            )
        elif pid is not None:
            log.info("%s is busy (%s): detaching it and stopping its daemon", mp, err)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        else:
            ok, err2 = _fusermount(mp, lazy=True)
            if not ok and find_mount(mp) is not None:
                raise UsageError(f"{mountpoint}: cannot unmount: {err2 or err}")
    if pid is not None and not wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 2.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 2.0)
    deadline = time.monotonic() + timeout
    while find_mount(mp) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    if find_mount(mp) is not None:
        _fusermount(mp, lazy=True)
        if find_mount(mp) is not None:
            raise UsageError(f"{mountpoint}: still mounted after {timeout:.0f} s")
