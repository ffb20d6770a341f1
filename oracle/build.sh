#!/usr/bin/env bash
# Builds the real nydus tools (nydus-image, nydusd, nydusify) and our Go harness around the
# snapshotter's converter, as test oracles. The product never runs them; tests and benches do.
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

# Debian packages the build needs besides the toolchains: protoc for the gRPC crates, perl and make for the
# vendored openssl.
apt_needed=""
for pkg in protobuf-compiler perl make gcc pkg-config; do
	dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed="$apt_needed $pkg"
done
if [ -n "$apt_needed" ]; then
	echo "make oracle: installing Debian packages:$apt_needed" >&2
	sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $apt_needed; } \
		>"$logs/apt.log" 2>&1 || fail apt "$logs/apt.log"
fi

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

"$bin/nydus-image" --version >/dev/null 2>&1 || { echo "make oracle: step 'check' failed: $bin/nydus-image does not run" >&2; exit 1; }
echo "$bin"
