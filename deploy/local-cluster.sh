#!/usr/bin/env bash
# Starts a local keel cluster on this machine, in the foreground (Ctrl-C stops it), and deploys the sample
# app (deploy/sample/web.yaml):
#   - 3 stacked masters: the Kubernetes API on https://127.0.0.1:6443, :26443, :36443; their store members
#     answer etcdctl on 127.0.0.1:2379, :22379, :32379;
#   - as root, 2 nodes that run containers: each a `keel agent` with a containerd of its own, its host
#     network a namespace from deploy/hosts.sh (pods get 10.244.<n>.0/24 and reach each other across
#     nodes), the busybox image from deploy/build-test-images.sh imported (no registry, no downloads);
#   - not as root, 3 hollow nodes (`keel hollow-nodes`) that report pods Running without containers.
# Data and logs live in ./.keel-cluster (delete it to start afresh; KEEL_CLUSTER_DIR puts them elsewhere).
#   deploy/local-cluster.sh                      build (debug) and start
#   KEEL=/path/to/keel deploy/local-cluster.sh   use an existing binary
#   KEEL_CLUSTER_DETACH=1 deploy/local-cluster.sh   return once the app runs, leaving the cluster up;
#                                                   `deploy/local-cluster.sh stop` stops it
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath -m "${KEEL_CLUSTER_DIR:-.keel-cluster}")
run=/run/keel-local-cluster # containerd sockets (a unix socket path must stay short)
root=
[ "$(id -u)" = 0 ] && root=1

# Stops what a detached run left (the pids it recorded), the nodes' containers and the hosts.
stop() {
  if [ -f "$data/pids" ]; then
    # shellcheck disable=SC2046
    kill $(cat "$data/pids") 2>/dev/null || true
    rm -f "$data/pids"
  fi
  stop_nodes
}

# The containers' processes, their shims and the nodes' containerds; mounts under the data dir; the hosts.
stop_nodes() {
  [ -n "$root" ] || return 0
  for n in 1 2; do
    local dir="$data/node-$n/containerd" sock="$run/node-$n.sock"
    for pidfile in "$dir"/state/io.containerd.runtime.v2.task/*/*/init.pid; do
      [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    pkill -9 -f "containerd-shim.*-address $sock" 2>/dev/null || true
    pkill -f "containerd --config $dir/config.toml" 2>/dev/null || true
  done
  sleep 0.5
  awk '{print $5}' /proc/self/mountinfo | grep "^$data/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  KEEL_HOSTS_PREFIX=kh bash deploy/hosts.sh down >/dev/null 2>&1 || true
  rm -rf "$run"
}

if [ "${1:-}" = stop ]; then
  stop
  echo "keel cluster stopped"
  exit 0
fi

if [ -n "$root" ]; then bash deploy/install-deps.sh >/dev/null; fi
if [ -z "${KEEL:-}" ]; then
  cargo build -q -p keel
  KEEL="${CARGO_TARGET_DIR:-target}/debug/keel"
fi
KEEL="$(realpath "$KEEL")"
mkdir -p "$data"
stop # whatever an earlier run left
cluster="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
state=new
[ -d "$data/m1" ] && state=existing
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  stop_nodes
}
if [ -z "${KEEL_CLUSTER_DETACH:-}" ]; then trap cleanup EXIT INT TERM; else trap 'echo "${pids[*]}" > "$data/pids"' EXIT; fi
i=0
for port in 2379 22379 32379; do
  i=$((i + 1))
  peer=$((port + 1))
  api=$((port + 4064)) # 6443, 26443, 36443
  setsid "$KEEL" server --name "m$i" --data-dir "$data/m$i" --api-listen "127.0.0.1:$api" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" >"$data/m$i.log" 2>&1 &
  pids+=($!)
done
export KUBECONFIG="$data/m1/admin.kubeconfig"
ready=
for _ in $(seq 1 300); do
  if [ -f "$KUBECONFIG" ] && kubectl get namespace default -o name >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "the masters did not come up; see $data/m*.log" >&2; exit 1; }

if [ -n "$root" ]; then
  nodes="2 nodes running containers (keel agent + containerd; logs in $data/node-*/)"
  KEEL_HOSTS_PREFIX=kh bash deploy/hosts.sh up 2 >/dev/null
  tar=$(bash deploy/build-test-images.sh "$data/images")
  mkdir -p "$run"
  for n in 1 2; do
    dir="$data/node-$n/containerd" sock="$run/node-$n.sock"
    mkdir -p "$dir"
    printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s"\n' \
      "$dir" "$dir" "$sock" >"$dir/config.toml"
    setsid containerd --config "$dir/config.toml" >"$data/node-$n/containerd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
    "$KEEL" images import --containerd-socket "$sock" --containerd-namespace keel "$tar" >/dev/null
    # shellcheck disable=SC2046
    setsid "$KEEL" agent --kubeconfig "$KUBECONFIG" --node-name "node-$n" --containerd-socket "$sock" \
      --containerd-namespace keel --data-dir "$data/node-$n/agent" --log-dir "$data/node-$n/logs" \
      --listen "127.0.0.1:$((10249 + n))" $(KEEL_HOSTS_PREFIX=kh bash deploy/hosts.sh env "$n") \
      >"$data/node-$n/agent.log" 2>&1 &
    pids+=($!)
  done
else
  nodes="3 hollow nodes (not root: pods are reported Running without containers)"
  setsid "$KEEL" hollow-nodes --kubeconfig "$KUBECONFIG" --count 3 --prefix node- >"$data/nodes.log" 2>&1 &
  pids+=($!)
fi
kubectl apply -f deploy/sample/web.yaml
kubectl -n sample rollout status deployment/web --timeout=180s
kubectl get nodes -o wide
kubectl -n sample get deployments,pods,services,endpoints -o wide
cat <<EOT

keel cluster running: 3 masters (logs in $data/m*.log), $nodes, the sample app in namespace sample.
  export KUBECONFIG=$KUBECONFIG    # any master's admin.kubeconfig works
  kubectl -n sample get pods -o wide
  kubectl -n sample logs deployment/web                       # httpd's request log (the probes)
  kubectl -n sample exec deployment/web -- wget -qO- localhost:8080/index.html
  kubectl -n sample exec -it deployment/web -- sh
  kubectl -n sample scale deployment/web --replicas=6
  kubectl -n sample set env deployment/web GREETING=hi && kubectl -n sample rollout status deployment/web
  kubectl get --raw '/readyz?verbose'      # which master runs the control loops
  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 get --prefix /registry/pods --keys-only
EOT
if [ -n "${KEEL_CLUSTER_DETACH:-}" ]; then
  echo "Detached: deploy/local-cluster.sh stop stops it."
  exit 0
fi
echo "Ctrl-C stops the cluster."
wait
