#!/usr/bin/env bash
# Builds the real nydus tools (nydus-image, nydusd, nydusify), our Go harness around the
# snapshotter's converter, estargz-build (eStargz layers by the snapshotter's writer), and erofs-utils 1.9.3 (mkfs.erofs, fsck.erofs, dump.erofs, erofsfuse), as test
# oracles. The product never runs them; tests and benches do.
#
# They are cached outside the checkout, keyed by the source tarball's sha256 and the converter's
# module version, so a second run only checks the cache. The last line printed is the directory
# holding the four programs. A failed step prints one line naming it, its cause and its log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shared=${NYDUS_SHARED:-$(cd "$here/../.." && pwd)/shared}
# A clone made elsewhere finds shared/ beside the checkout it was cloned from.
if [ ! -d "$shared/oracle" ]; then
	origin=$(git -C "$here" config --get remote.origin.url 2>/dev/null || true)
	case "$origin" in /*) [ -d "$origin/../shared/oracle" ] && shared=$(cd "$origin/../shared" && pwd) ;; esac
fi
tarball="$shared/oracle/nydus-2.4.4-src.tar.gz"

fail() { # step, log
	local cause
	# The first error line says what broke (cargo's last lines only say that it stopped); a missing
	# program is named by the line that asks for it.
	cause=$(grep -m1 -E "Could not find|command not found|^error(\[|:)" "$2" 2>/dev/null | sed 's/^ *//' | cut -c1-240)
	[ -n "$cause" ] || cause=$(grep -E "[Ee]rror|cannot|failed|not found" "$2" 2>/dev/null | tail -n 1 | cut -c1-240)
	echo "make oracle: step '$1' failed: ${cause:-see the log} (log: $2)" >&2
	exit 1
}

[ -f "$tarball" ] || { echo "make oracle: no nydus source at $tarball (NYDUS_SHARED=DIR names the shared folder)" >&2; exit 1; }
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ -f "$tarball.sha256" ] && [ "$sum" != "$(cut -d' ' -f1 "$tarball.sha256")" ]; then
	echo "make oracle: $tarball does not match its .sha256" >&2; exit 1
fi
harness_sum=$(cd "$here/harness" && cat go.mod $(ls go.sum *.go 2>/dev/null) | sha256sum | cut -c1-12)
root=${NYDUS_ORACLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nydus-inspect/oracle}
# The Rust build is keyed by the tarball; the harness is rebuilt when its sources change, and its go.mod
# pins the converter's module version, so that version is part of the key too.
dir="$root/nydus-${sum:0:16}"
bin="$dir/bin"
logs="$dir/logs"
mkdir -p "$bin" "$logs"

apt_install() { # step, log, package...: install the Debian packages that are missing
	local step=$1 log=$2 pkg apt_needed=""
	shift 2
	for pkg in "$@"; do
		dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed="$apt_needed $pkg"
	done
	[ -n "$apt_needed" ] || return 0
	echo "make oracle: installing Debian packages:$apt_needed" >&2
	local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $apt_needed; } \
		>"$log" 2>&1 || fail "$step" "$log"
}

# Debian packages the build needs besides the toolchains: protoc for the gRPC crates, perl and make for the
# vendored openssl.
apt_install apt "$logs/apt.log" protobuf-compiler perl make gcc pkg-config

for tool in cargo go cc perl make protoc; do
	command -v "$tool" >/dev/null || { echo "make oracle: step 'toolchain' failed: $tool is not installed" >&2; exit 1; }
done

src="$dir/src/nydus-2.4.4"
if [ ! -f "$src/.unpacked" ]; then
	rm -rf "$dir/src" && mkdir -p "$dir/src"
	tar -xzf "$tarball" -C "$dir/src" >"$logs/unpack.log" 2>&1 || fail unpack "$logs/unpack.log"
	# The tarball pins a toolchain this machine cannot fetch; the stable one builds it.
	rm -f "$src/rust-toolchain.toml"
	touch "$src/.unpacked"
fi

if [ ! -x "$bin/nydus-image" ] || [ ! -x "$bin/nydusd" ]; then
	echo "make oracle: building nydus-image and nydusd (release; tens of minutes on 2 cores, once per machine; log: $logs/cargo.log)" >&2
	(cd "$src" && RUSTUP_TOOLCHAIN=stable cargo build --release --locked --bin nydus-image --bin nydusd) \
		>"$logs/cargo.log" 2>&1 || fail cargo "$logs/cargo.log"
	install -m 0755 "$src/target/release/nydus-image" "$src/target/release/nydusd" "$bin/"
fi

if [ ! -x "$bin/nydusify" ]; then
	echo "make oracle: building nydusify (log: $logs/nydusify.log)" >&2
	(cd "$src/contrib/nydusify" && CGO_ENABLED=0 go build -o "$bin/nydusify" ./cmd/nydusify.go) \
		>"$logs/nydusify.log" 2>&1 || fail nydusify "$logs/nydusify.log"
fi

if [ ! -x "$bin/nydus-converter" ] || [ "$(cat "$bin/.harness-sum" 2>/dev/null)" != "$harness_sum" ]; then
	echo "make oracle: building the converter harness (log: $logs/harness.log)" >&2
	(cd "$here/harness" && CGO_ENABLED=0 go build -o "$bin/nydus-converter.tmp" .) \
		>"$logs/harness.log" 2>&1 || fail harness "$logs/harness.log"
	mv "$bin/nydus-converter.tmp" "$bin/nydus-converter"
	echo "$harness_sum" >"$bin/.harness-sum"
fi

# estargz-build writes eStargz layers with the stargz snapshotter's own estargz module (its go.mod pins the
# version), for the tests of our eStargz reader and estargz-ref packer; keyed by its sources like the harness.
estargz_sum=$(cd "$here/estargz" && cat go.mod go.sum *.go | sha256sum | cut -c1-12)
if [ ! -x "$bin/estargz-build" ] || [ "$(cat "$bin/.estargz-sum" 2>/dev/null)" != "$estargz_sum" ]; then
	echo "make oracle: building estargz-build (log: $logs/estargz.log)" >&2
	(cd "$here/estargz" && CGO_ENABLED=0 go build -o "$bin/estargz-build.tmp" .) \
		>"$logs/estargz.log" 2>&1 || fail estargz "$logs/estargz.log"
	mv "$bin/estargz-build.tmp" "$bin/estargz-build"
	echo "$estargz_sum" >"$bin/.estargz-sum"
fi

"$bin/nydus-image" --version >/dev/null 2>&1 || { echo "make oracle: step 'check' failed: $bin/nydus-image does not run" >&2; exit 1; }

# erofs-utils 1.9.3 (mkfs.erofs, fsck.erofs, dump.erofs, erofsfuse): Debian's 1.5 has no --tar and only lz4, so
# the EROFS tests judge our reader by this build. It goes to a sibling cache directory keyed by its own
# tarball (erofs-utils-<sha256[:16]>/bin), where tests/oracle.py looks; the nydus directory stays the last line.
erofs_tarball="$shared/oracle/erofs-utils-1.9.3-src.tar.gz"
[ -f "$erofs_tarball" ] || { echo "make oracle: no erofs-utils source at $erofs_tarball" >&2; exit 1; }
esum=$(sha256sum "$erofs_tarball" | cut -d' ' -f1)
if [ -f "$erofs_tarball.sha256" ] && [ "$esum" != "$(cut -d' ' -f1 "$erofs_tarball.sha256")" ]; then
	echo "make oracle: $erofs_tarball does not match its .sha256" >&2; exit 1
fi
edir="$root/erofs-utils-${esum:0:16}"
ebin="$edir/bin"
elogs="$edir/logs"
mkdir -p "$ebin" "$elogs"
if ! (for p in mkfs.erofs fsck.erofs dump.erofs erofsfuse; do [ -x "$ebin/$p" ] || exit 1; done); then
	# Every compressor mkfs.erofs can write (MicroLZMA needs liblzma 5.4, as in Debian 12), and libfuse3 for erofsfuse.
	apt_install erofs-apt "$elogs/apt.log" autoconf automake libtool pkg-config make gcc uuid-dev liblz4-dev \
		liblzma-dev libzstd-dev libdeflate-dev zlib1g-dev libfuse3-dev
	esrc="$edir/src/erofs-utils-1.9.3"
	rm -rf "$edir/src" && mkdir -p "$edir/src"
	tar -xzf "$erofs_tarball" -C "$edir/src" >"$elogs/unpack.log" 2>&1 || fail erofs-unpack "$elogs/unpack.log"
	echo "make oracle: building erofs-utils 1.9.3 (a few minutes, once per machine; log: $elogs/build.log)" >&2
	# Optional libraries are named one by one so the build does not depend on what else the machine has.
	(cd "$esrc" && ./autogen.sh && ./configure --enable-lz4 --enable-lzma --with-libdeflate --with-libzstd \
		--with-zlib --enable-fuse --without-libcurl --without-openssl --without-libxml2 --without-json-c \
		--without-libnl3 --without-xxhash --without-selinux && make -j"$(nproc)") \
		>"$elogs/build.log" 2>&1 || fail erofs-build "$elogs/build.log"
	install -m 0755 "$esrc/mkfs/mkfs.erofs" "$esrc/fsck/fsck.erofs" "$esrc/dump/dump.erofs" "$esrc/fuse/erofsfuse" "$ebin/"
fi
"$ebin/mkfs.erofs" --version >/dev/null 2>&1 || { echo "make oracle: step 'erofs-check' failed: $ebin/mkfs.erofs does not run" >&2; exit 1; }
echo "make oracle: erofs-utils in $ebin" >&2
echo "$bin"
