#!/usr/bin/env bash
# Starts a local keel cluster on 127.0.0.1, in the foreground (Ctrl-C stops it), and deploys the sample app
# (deploy/sample/web.yaml):
#   - 3 stacked masters: the Kubernetes API on https://127.0.0.1:6443, :26443, :36443; their store members
#     answer etcdctl on 127.0.0.1:2379, :22379, :32379;
#   - 3 hollow nodes (`keel hollow-nodes`): registered Nodes whose pods are reported Running without
#     containers, until `keel agent` (issue 7) runs real ones.
# Data and logs live in ./.keel-cluster (delete it to start afresh).
#   deploy/local-cluster.sh                      build (debug) and start
#   KEEL=/path/to/keel deploy/local-cluster.sh   use an existing binary
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash deploy/install-deps.sh >/dev/null; fi
if [ -z "${KEEL:-}" ]; then
  cargo build -q -p keel
  KEEL="${CARGO_TARGET_DIR:-target}/debug/keel"
fi
data=.keel-cluster
mkdir -p "$data"
cluster="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
state=new
[ -d "$data/m1" ] && state=existing
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
i=0
for port in 2379 22379 32379; do
  i=$((i + 1))
  peer=$((port + 1))
  api=$((port + 4064))   # 6443, 26443, 36443
  "$KEEL" server --name "m$i" --data-dir "$data/m$i" --api-listen "127.0.0.1:$api" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" >"$data/m$i.log" 2>&1 &
  pids+=($!)
done
export KUBECONFIG="$PWD/$data/m1/admin.kubeconfig"
ready=
for _ in $(seq 1 300); do
  if [ -f "$KUBECONFIG" ] && kubectl get namespace default -o name >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "the masters did not come up; see $data/m*.log" >&2; exit 1; }
"$KEEL" hollow-nodes --kubeconfig "$KUBECONFIG" --count 3 --prefix node- >"$data/nodes.log" 2>&1 &
pids+=($!)
kubectl apply -f deploy/sample/web.yaml
kubectl -n sample rollout status deployment/web --timeout=120s
kubectl get nodes
kubectl -n sample get deployments,pods,services,endpoints -o wide
cat <<EOT

keel cluster running: 3 masters (logs in $data/m*.log), 3 hollow nodes, the sample app in namespace sample.
  export KUBECONFIG=$KUBECONFIG    # any master's admin.kubeconfig works
  kubectl -n sample get pods -o wide
  kubectl -n sample scale deployment/web --replicas=6
  kubectl -n sample set image deployment/web httpd=busybox:1.37 && kubectl -n sample rollout status deployment/web
  kubectl get --raw '/readyz?verbose'      # which master runs the control loops
  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 get --prefix /registry/pods --keys-only
Ctrl-C stops the cluster.
EOT
wait
