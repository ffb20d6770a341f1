#!/usr/bin/env bash
# Build benchmark inputs for nydus-inspect (idempotent, runs as root).
#
#   bench/make_rootfs.sh          -> $DIR/rootfs/ and $DIR/rootfs.tar
#   bench/make_rootfs.sh --big    -> additionally $DIR/big.tar (~2.1 GB)
#
# DIR defaults to /var/tmp/nydus-bench (override with NYDUS_BENCH_DIR).
# Existing outputs are reused; every output is written under a temporary
# name and renamed into place only when complete.
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
DIR=${NYDUS_BENCH_DIR:-/var/tmp/nydus-bench}

BIG=0
for arg in "$@"; do
    case "$arg" in
        --big) BIG=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "[make_rootfs] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "must run as root (debootstrap needs it)" >&2
    exit 1
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)          # debootstrap wants absolute paths
ROOTFS=$DIR/rootfs
TAR=$DIR/rootfs.tar
BIGTAR=$DIR/big.tar

# Unmount anything debootstrap may have left mounted below $1, then delete it.
clean_tree() {
    local d=$1 m
    [ -e "$d" ] || return 0
    # deepest mount points first
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v p="$d" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts | sort -r)
    rm -rf --one-file-system "$d"
}

print_stats() {
    local f=$1
    local size entries
    size=$(stat -c %s "$f")
    entries=$(tar -tf "$f" | wc -l)
    printf '%s: %s bytes (%s), %s entries\n' "$f" "$size" \
        "$(numfmt --to=iec-i --suffix=B "$size")" "$entries"
}

# ---------------------------------------------------------------- rootfs ----
build_rootfs() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends debootstrap \
            || { apt-get update && apt-get install -y --no-install-recommends debootstrap; }
    fi

    local tmp=$DIR/rootfs.tmp cache=$DIR/debcache
    clean_tree "$tmp"
    mkdir -p "$cache"

    local opts=(--variant=minbase --cache-dir="$cache")
    if [ -r "$KEYRING" ]; then
        opts+=(--keyring="$KEYRING")
    else
        log "WARNING: $KEYRING missing, using --no-check-gpg"
        opts+=(--no-check-gpg)
    fi

    log "debootstrap ${opts[*]} $SUITE $tmp $MIRROR"
    if ! debootstrap "${opts[@]}" "$SUITE" "$tmp" "$MIRROR"; then
        log "debootstrap failed; tail of debootstrap.log:"
        tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        clean_tree "$tmp"
        exit 1
    fi
    # debootstrap leaves /proc etc. unmounted on success, but be safe.
    awk -v p="$tmp" 'index($2, p "/") == 1 {print $2}' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m" || true; done
    # apt lists / archives are not part of a typical image layer
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* 2>/dev/null || true
    mv -T "$tmp" "$ROOTFS"
}

build_tar() {
    local tmp=$TAR.tmp.$$
    rm -f "$TAR".tmp.*
    log "creating $TAR"
    # --xattrs switches tar to PAX format, which by default records atime and
    # ctime per entry; drop them so the tar is reproducible from the same tree.
    tar --numeric-owner --xattrs --xattrs-include='*' --sort=name \
        --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$ROOTFS" -cf "$tmp" .
    mv -f "$tmp" "$TAR"
}

# ------------------------------------------------------------------ big -----
# Deterministic ~2.1 GB layer: 40 files x 50 MiB, each a mix of 1 MiB chunks
# of seeded PRNG bytes (incompressible), repeated text (highly compressible)
# and half/half chunks. Streamed straight into the tar, no staging copy.
build_big() {
    local tmp=$BIGTAR.tmp.$$
    rm -f "$BIGTAR".tmp.*
    log "creating $BIGTAR"
    python3 - "$tmp" <<'PY'
import io, random, sys, tarfile

out = sys.argv[1]
NFILES, FILE_SIZE, CHUNK = 40, 50 * 1024 * 1024, 1024 * 1024
MTIME = 1700000000
TEXT = (b"nydus-inspect streaming memory benchmark: the quick brown fox "
        b"jumps over the lazy dog 0123456789\n") * 20000


class Gen(io.RawIOBase):
    """Readable stream producing FILE_SIZE deterministic bytes."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.left = FILE_SIZE
        self.buf, self.pos = b"", 0
        self.toff = seed * 7919 % 1000

    def _chunk(self):
        kind = self.rng.randrange(3)
        if kind == 0:                                   # incompressible
            return self.rng.randbytes(CHUNK)
        if kind == 1:                                   # compressible
            self.toff = (self.toff + 13) % 1000
            return TEXT[self.toff:self.toff + CHUNK]
        half = CHUNK // 2                                # mixed
        return self.rng.randbytes(half) + TEXT[:CHUNK - half]

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        parts = []
        while n > 0:
            if self.pos >= len(self.buf):
                self.buf, self.pos = self._chunk(), 0
            take = min(n, len(self.buf) - self.pos)
            parts.append(self.buf[self.pos:self.pos + take])
            self.pos += take
            n -= take
            self.left -= take
        return b"".join(parts)


def info(name, typ, size=0, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.mtime = typ, size, mode, MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tf:
    tf.addfile(info("./", tarfile.DIRTYPE, mode=0o755))
    tf.addfile(info("./big/", tarfile.DIRTYPE, mode=0o755))
    for i in range(NFILES):
        tf.addfile(info(f"./big/blob{i:02d}.bin", tarfile.REGTYPE, FILE_SIZE),
                   Gen(seed=i))
PY
    mv -f "$tmp" "$BIGTAR"
}

# ------------------------------------------------------------------ main ----
if [ -d "$ROOTFS" ] && [ -f "$TAR" ]; then
    log "rootfs and tar already present, nothing to do"
else
    [ -d "$ROOTFS" ] || build_rootfs
    build_tar
fi

if [ "$BIG" -eq 1 ]; then
    if [ -f "$BIGTAR" ]; then
        log "big.tar already present"
    else
        build_big
    fi
fi

echo "rootfs:  $ROOTFS"
print_stats "$TAR"
largest=$(find "$ROOTFS" -xdev -type f -printf '%s %p\n' | sort -n | tail -n 1)
echo "largest file in rootfs: $largest"
if [ -f "$BIGTAR" ]; then
    print_stats "$BIGTAR"
fi
