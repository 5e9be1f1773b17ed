#!/usr/bin/env bash
# Starts a local 3-member keel store on 127.0.0.1 (client ports 2379, 22379, 32379; peer ports 2380, 22380,
# 32380), in the foreground; Ctrl-C stops it. Data lives in ./.keel-local (delete it to start afresh).
#   deploy/local-store.sh            build (debug) and start
#   KEEL=/path/to/keel deploy/local-store.sh   use an existing binary
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash deploy/install-deps.sh >/dev/null; fi
if [ -z "${KEEL:-}" ]; then
  cargo build -q -p keel
  KEEL="${CARGO_TARGET_DIR:-target}/debug/keel"
fi
data=.keel-local
mkdir -p "$data"
cluster="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
i=0
for port in 2379 22379 32379; do
  i=$((i + 1))
  peer=$((port + 1))
  "$KEEL" kv --name "m$i" --data-dir "$data/m$i" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new >"$data/m$i.log" 2>&1 &
  pids+=($!)
done
endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1; then break; fi
  sleep 0.2
done
ETCDCTL_API=3 etcdctl --endpoints="$endpoints" -w table endpoint status || true
cat <<EOT

keel store running: 3 members, logs in $data/m*.log. Try:
  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$endpoints
  etcdctl put greeting hello && etcdctl get greeting
  etcdctl watch --prefix greet      # in another terminal
  etcdctl -w table member list
Ctrl-C stops the store.
EOT
wait
