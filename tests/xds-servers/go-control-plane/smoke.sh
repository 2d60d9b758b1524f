#!/usr/bin/env bash
# End-to-end check of the harness with gocp-xds-probe as the client:
# SotW and delta, over ADS and over per-type services, get the snapshot for the node id, an update of
# the snapshot file is pushed on open streams, a NACK is logged as one, a bad
# snapshot is refused while the old one keeps being served.
#
#   tests/xds-servers/go-control-plane/smoke.sh [OUT_DIR]   (OUT_DIR as for build.sh)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
server=$("$here/build.sh" "$@")
bin=$(dirname "$server")
work=$(mktemp -d)
pid=
cleanup() {
	[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "SMOKE FAILED: $*" >&2
	echo "--- server log" >&2
	cat "$work/server.log" >&2
	exit 1
}

cp "$here/examples/snapshot-v1.json" "$work/snap.json"
"$server" -listen 127.0.0.1:0 -admin 127.0.0.1:0 -node-id smoke-node \
	-snapshot "$work/snap.json" -ready-file "$work/ready" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -s "$work/ready" ]] && break; sleep 0.1; done
[[ -s "$work/ready" ]] || fail "server did not start"
grpc=$(sed 's/^grpc=\([^ ]*\) .*/\1/' "$work/ready")
admin=$(sed 's/.* admin=//' "$work/ready")

swap() { # replace the snapshot file atomically, after $1 seconds
	sleep "$1"
	cp "$2" "$work/snap.json.new" && mv "$work/snap.json.new" "$work/snap.json"
}
probe() { "$bin/gocp-xds-probe" -server "$grpc" -node-id smoke-node -timeout 10s "$@"; }

# SotW: v1, then v2 pushed after the file changes (picked up by the mtime poll).
swap 1 "$here/examples/snapshot-v2.json" &
bg=$!
probe -mode sotw -types cds,eds,lds,rds -updates 1 >"$work/sotw.out" || fail "sotw probe: $(cat "$work/sotw.out")"
wait "$bg"
grep -q 'type=envoy.config.cluster.v3.Cluster version=v1 .*resources=\[backend\]' "$work/sotw.out" || fail "sotw v1"
grep -q 'type=envoy.config.cluster.v3.Cluster version=v2 .*resources=\[backend static-backend\]' "$work/sotw.out" || fail "sotw v2"

# Delta: v2, then back to v1 (static-backend removed) after POST /reload.
(swap 1 "$here/examples/snapshot-v1.json" && curl -fsS -X POST "http://$admin/reload" >/dev/null) &
bg=$!
probe -mode delta -types cds -updates 1 >"$work/delta.out" || fail "delta probe: $(cat "$work/delta.out")"
wait "$bg"
grep -q 'system_version=v2 .*resources=\[backend@[0-9a-f]* static-backend@' "$work/delta.out" || fail "delta v2"
grep -q 'system_version=v1 .*removed=\[static-backend\]' "$work/delta.out" || fail "delta removal"

# Per-type services (not ADS): CDS over SotW, EDS over delta.
probe -per-type -mode sotw -types cds >"$work/cds.out" || fail "per-type CDS probe"
grep -q 'type=envoy.config.cluster.v3.Cluster version=v1 .*resources=\[backend\]' "$work/cds.out" || fail "per-type CDS"
probe -per-type -mode delta -types eds >"$work/eds.out" || fail "per-type delta EDS probe"
grep -q 'type=envoy.config.endpoint.v3.ClusterLoadAssignment system_version=v1 .*resources=\[backend@' "$work/eds.out" || fail "per-type delta EDS"

# NACK is seen and logged as such.
probe -mode sotw -types lds -nack-first >"$work/nack.out" || fail "nack probe"
grep -q 'request NACK type=envoy.config.listener.v3.Listener .*deliberate NACK' "$work/server.log" || fail "NACK not logged"
curl -fsS "http://$admin/events" | grep -q '"kind":"NACK"' || fail "NACK not in /events"

# A bad snapshot is refused; the old version stays.
echo '{"resources":[{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","connect_timeout":"1s"}]}' >"$work/snap.json"
if curl -fsS -X POST "http://$admin/reload" >/dev/null 2>&1; then fail "bad snapshot accepted"; fi
curl -fsS "http://$admin/healthz" | grep -q 'version=v1' || fail "old version not kept"

cat "$work/sotw.out" "$work/delta.out" "$work/cds.out" "$work/eds.out"
echo "smoke: 6 passed, 0 failed"
