#!/usr/bin/env bash
# Builds gocp-xds-server (and the gocp-xds-probe client) against Debian's
# packaged go-control-plane, offline (GOPATH mode, GOPROXY=off).
#
#   tests/xds-servers/go-control-plane/build.sh [OUT_DIR]
#
# OUT_DIR defaults to <repo>/target/xds-servers/go-control-plane. On success
# the binaries are OUT_DIR/bin/gocp-xds-server and OUT_DIR/bin/gocp-xds-probe,
# and the last line printed is the server's path.
#
# Where the Go code comes from: Debian bookworm (this machine's release) has
# no go-control-plane; Debian trixie-backports does (with the Go toolchain and
# grpc/protobuf it was built against). Those are all architecture-independent
# source packages plus a statically linked compiler, so instead of mixing
# trixie into the system, apt-get (with a private configuration: its own
# sources list, state and cache under OUT_DIR) resolves and downloads them,
# and they are unpacked under OUT_DIR/deps/root. Nothing outside OUT_DIR is
# changed except for installing two bookworm packages apt itself needs.
#
# Idempotent: a second run with the same sources and packages does nothing
# but compare a stamp. Safe to run concurrently (flock on OUT_DIR/.lock).
#
# Environment:
#   GOCP_DEBIAN_MIRROR  default http://deb.debian.org/debian
#   GOCP_SUITE          default trixie-backports (base suite is its prefix)
#   GOCP_FORCE=1        rebuild the binaries even if the stamp matches
#   GOCP_REFRESH=1      fetch the Debian packages again (newest in the suite)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-$repo/target/xds-servers/go-control-plane}
mkdir -p "$out"
out=$(cd "$out" && pwd)
mirror=${GOCP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${GOCP_SUITE:-trixie-backports}
base=${suite%%-*}

log() { printf 'gocp-build: %s\n' "$*" >&2; }

exec 9>"$out/.lock"
flock 9

deps=$out/deps
root=$deps/root
srcs=("$here/server/main.go" "$here/probe/main.go" "$here/build.sh")
src_sum=$(cat "${srcs[@]}" | sha256sum | cut -d' ' -f1)

# Fast path: binaries built from these sources against these packages.
if [[ "${GOCP_FORCE:-0}" != 1 && "${GOCP_REFRESH:-0}" != 1 && -f "$out/bin/.stamp" && -f "$deps/.complete" ]] &&
	[[ "$(cat "$out/bin/.stamp")" == "$src_sum $(cat "$deps/.complete")" ]] &&
	[[ -x "$out/bin/gocp-xds-server" && -x "$out/bin/gocp-xds-probe" ]]; then
	log "up to date"
	echo "$out/bin/gocp-xds-server"
	exit 0
fi

# --- 1. Debian packages ------------------------------------------------------
fetch_deps() {
	local t0=$SECONDS
	# apt-get and dpkg-deb are on every Debian; the trixie signing keys come
	# with bookworm's debian-archive-keyring.
	local need=()
	command -v dpkg-deb >/dev/null || need+=(dpkg)
	[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
	if ((${#need[@]})); then
		log "apt-get install ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
	fi

	local apt=$deps/apt
	rm -rf "$apt" "$root" "$deps/.complete"
	mkdir -p "$apt"/{etc/parts,state/lists/partial,cache/archives/partial,debs} "$root"
	: >"$apt/state/status" # empty: resolve as if nothing were installed
	cat >"$apt/etc/sources.list" <<-EOF
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $base main
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main
	EOF
	cat >"$apt/apt.conf" <<-EOF
		Dir::Etc::SourceList "$apt/etc/sources.list";
		Dir::Etc::SourceParts "$apt/etc/parts";
		Dir::Etc::Preferences "$apt/etc/none";
		Dir::Etc::PreferencesParts "$apt/etc/parts";
		Dir::State "$apt/state";
		Dir::State::status "$apt/state/status";
		Dir::Cache "$apt/cache";
		APT::Architecture "$(dpkg --print-architecture)";
		APT::Get::Assume-Yes "true";
		Acquire::Languages "none";
		APT::Sandbox::User "root";
	EOF
	export APT_CONFIG=$apt/apt.conf
	log "apt-get update ($base, $suite)"
	apt-get -q update >"$apt/update.log" 2>&1 || {
		cat "$apt/update.log" >&2
		return 1
	}
	if grep -E '^(W|E):' "$apt/update.log" >&2; then
		log "apt-get update reported problems (above)"
		return 1
	fi
	# Resolve the closure of the packages we need as apt would install them,
	# then keep only the Go ones (source trees and the toolchain); the rest
	# (libc, pkg-config, ...) would be for cgo users and is not needed.
	apt-get -s -t "$suite" --no-install-recommends install \
		golang-go golang-github-envoyproxy-go-control-plane-dev >"$apt/resolve.txt"
	awk '$1 == "Inst" && $2 ~ /^golang/ { v = $3; gsub(/[()]/, "", v); print $2 "=" v }' \
		"$apt/resolve.txt" | sort >"$deps/packages.txt"
	grep -q '^golang-github-envoyproxy-go-control-plane-dev=' "$deps/packages.txt" || {
		log "go-control-plane not found in $suite"
		return 1
	}
	log "apt-get download $(wc -l <"$deps/packages.txt") packages"
	(cd "$apt/debs" && xargs apt-get -q download <"$deps/packages.txt" >"$apt/download.log" 2>&1) || {
		cat "$apt/download.log" >&2
		return 1
	}
	log "unpacking"
	for f in "$apt"/debs/*.deb; do dpkg-deb -x "$f" "$root"; done
	rm -rf "$apt/debs" "$apt/cache" "$apt/state/lists"
	unset APT_CONFIG
	sha256sum <"$deps/packages.txt" | cut -d' ' -f1 >"$deps/.complete"
	log "Debian packages ready in $((SECONDS - t0))s"
}

if [[ "${GOCP_REFRESH:-0}" == 1 || ! -f "$deps/.complete" ]]; then
	fetch_deps
fi

# --- 2. Build ----------------------------------------------------------------
goroot=$(ls -d "$root"/usr/lib/go-1.* 2>/dev/null | sort -V | tail -1)
[[ -x "$goroot/bin/go" ]] || {
	log "no Go toolchain under $root/usr/lib (rerun with GOCP_REFRESH=1)"
	exit 1
}
export GOROOT=$goroot GOPATH=$root/usr/share/gocode GOCACHE=$out/gocache
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0 GOTELEMETRY=off
pkgver() { sed -n "s/^$1=//p" "$deps/packages.txt"; }
info="go-control-plane=$(pkgver golang-github-envoyproxy-go-control-plane-dev) grpc=$(pkgver golang-google-grpc-dev) protobuf=$(pkgver golang-google-protobuf-dev) go=$("$GOROOT/bin/go" env GOVERSION) (Debian $suite)"
t0=$SECONDS
mkdir -p "$out/bin"
cd "$here"
for p in server probe; do
	log "go build $p"
	nice -n 10 "$GOROOT/bin/go" build -p 2 -trimpath -ldflags "-X 'main.buildInfo=$info'" \
		-o "$out/bin/gocp-xds-$p.tmp" "./$p"
	mv "$out/bin/gocp-xds-$p.tmp" "$out/bin/gocp-xds-$p"
done
echo "$info" >"$out/bin/VERSIONS"
echo "$src_sum $(cat "$deps/.complete")" >"$out/bin/.stamp"
log "built in $((SECONDS - t0))s: $info"
echo "$out/bin/gocp-xds-server"
