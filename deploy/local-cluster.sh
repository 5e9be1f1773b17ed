#!/usr/bin/env bash
# Starts a local keel cluster on this machine, in the foreground (Ctrl-C stops it), and deploys the sample
# app (deploy/sample/web.yaml).
#
#   deploy/local-cluster.sh [--masters 3|5] [--external-store] [--nodes N]    build (debug) and start
#   deploy/local-cluster.sh stop                                              stop a detached cluster
#   deploy/local-cluster.sh add-master        a new master joins the running cluster with a join token
#   KEEL=/path/to/keel ...             use an existing binary
#   KEEL_CLUSTER_DETACH=1 ...          return once the app runs, leaving the cluster up
#
# As root, every machine of the cluster is a host of its own (deploy/hosts.sh: a network namespace with its
# own address on one bridge, so that a partition between any two of them is one nftables rule):
#   - masters m1..mM (default 3) at 10.200.0.101.., the API on :6443; stacked, each runs its store member
#     (:2379 clients, :2380 peers); with --external-store, 3 `keel kv` members s1..s3 at 10.200.0.151..;
#   - nodes node-1..node-N (default 2) at 10.200.0.11..: a `keel agent` each, with a containerd of its own,
#     pods in 10.244.<n>.0/24 reaching each other across nodes, the busybox image from
#     deploy/build-test-images.sh imported (no registry, no downloads); every agent knows every master
#     through its own load balancer (keel-lb) and keeps working when any master dies;
#   - `keel lb` on 127.0.0.1:6443 for you: .keel-cluster/admin.kubeconfig goes through it to whichever
#     master is alive.
# Not as root, the masters run on 127.0.0.1 (APIs :6443, :26443, :36443, …; `keel lb` on 127.0.0.1:6444)
# with 3 hollow nodes (`keel hollow-nodes`) that report pods Running without containers.
# Data and logs live in ./.keel-cluster (delete it to start afresh; KEEL_CLUSTER_DIR puts them elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath -m "${KEEL_CLUSTER_DIR:-.keel-cluster}")
run=/run/keel-local-cluster # containerd sockets (a unix socket path must stay short)
export KEEL_HOSTS_PREFIX=kh
root=
[ "$(id -u)" = 0 ] && root=1

masters=3 nodes=2 external=
command=start
while (($#)); do
  case "$1" in
    stop) command=stop; shift ;;
    add-master) command=add-master; shift ;;
    --masters) masters=${2:-}; shift 2 ;;
    --nodes) nodes=${2:-}; shift 2 ;;
    --external-store) external=1; shift ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "local-cluster.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $masters == 3 || $masters == 5 ]] || { echo "local-cluster.sh: --masters must be 3 or 5" >&2; exit 2; }
[[ $nodes =~ ^[0-9]+$ ]] && ((nodes >= 1 && nodes <= 20)) || { echo "local-cluster.sh: --nodes must be 1..20" >&2; exit 2; }

# Stops what a detached run left (the pids it recorded), the nodes' containers and the hosts.
stop() {
  local more=()
  # A process restarted by someone else (the chaos harness) has its new pid in procs/<name>/pid.
  [ -d "$data/procs" ] && more=($(cat "$data"/procs/*/pid 2>/dev/null || true))
  if [ -f "$data/pids" ] || ((${#more[@]})); then
    # shellcheck disable=SC2046
    stop_pids $(cat "$data/pids" 2>/dev/null || true) "${more[@]}"
    rm -f "$data/pids"
  fi
  rm -rf "$data/procs"
  stop_nodes
}

# SIGTERM, then up to 10 s for the processes to end (a master still stopping holds its data dir), then -9.
stop_pids() {
  (($#)) || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$@" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$@" 2>/dev/null || true
}

# The containers' processes, their shims and the nodes' containerds; mounts under the data dir; the hosts.
stop_nodes() {
  [ -n "$root" ] || return 0
  for dir in "$data"/node-*/containerd; do
    [ -d "$dir" ] || continue
    local n sock
    n=$(basename "$(dirname "$dir")")
    sock="$run/$n.sock"
    for pidfile in "$dir"/state/io.containerd.runtime.v2.task/*/*/init.pid; do
      [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    pkill -9 -f "containerd-shim.*-address $sock" 2>/dev/null || true
    pkill -f "containerd --config $dir/config.toml" 2>/dev/null || true
  done
  sleep 0.5
  awk '{print $5}' /proc/self/mountinfo | grep "^$data/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  bash deploy/hosts.sh down >/dev/null 2>&1 || true
  rm -rf "$run"
}

if [ "$command" = stop ]; then
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
[ "$command" = start ] && stop # whatever an earlier run left

# Where each machine is: its address, its ports, and how to run a program on it.
client_ports=(2379 22379 32379 42379 52379)
store_ports=(3379 23379 33379)
if [ -n "$root" ]; then
  stores=0
  [ -n "$external" ] && stores=3
  [ "$command" = start ] && bash deploy/hosts.sh up "$nodes" --masters "$masters" --stores "$stores" >/dev/null
  m_ip() { bash deploy/hosts.sh ip "m$1"; }
  s_ip() { bash deploy/hosts.sh ip "s$1"; }
  m_client() { echo 2379; }
  m_api() { echo 6443; }
  s_client() { echo 2379; }
  on() { echo "nsenter --net=/run/netns/kh$1"; } # a program on host $1 (m1, s2, 3 …)
  lb_listen=127.0.0.1:6443
  lb_netns=(--netns /run/netns/khhub)
  hub=(nsenter --net=/run/netns/khhub) # where the hosts' addresses are reachable from
else
  m_ip() { echo 127.0.0.1; }
  s_ip() { echo 127.0.0.1; }
  m_client() { echo "${client_ports[$(($1 - 1))]}"; }
  m_api() { echo $(($(m_client "$1") + 4064)); } # 6443, 26443, 36443, …
  s_client() { echo "${store_ports[$(($1 - 1))]}"; }
  on() { :; }
  lb_listen=127.0.0.1:6444
  lb_netns=()
  hub=()
fi

pids=()
names=() # what each pid is, for the health checks
logs=()
# What this run started goes; a starting run also takes the masters added since and the nodes' hosts.
cleanup() {
  if [ "$command" = start ]; then
    # shellcheck disable=SC2046
    stop_pids "${pids[@]}" $(cat "$data"/procs/*/pid 2>/dev/null || true)
  else
    stop_pids "${pids[@]}"
  fi
  wait 2>/dev/null || true
  [ "$command" = start ] && stop_nodes
  return 0
}
if [ "$command" = start ]; then
  if [ -z "${KEEL_CLUSTER_DETACH:-}" ]; then trap cleanup EXIT INT TERM; else trap 'echo "${pids[*]}" > "$data/pids"' EXIT; fi
fi

# Starts a program in the background, in its own session, recording its pid, name and log; and, under
# $data/procs/<name>/, its command line (argv, NUL-separated), pid and log, so that a tool that kills it
# (the chaos harness's cluster mode) can start it again as it was, and `stop` finds it then too.
launch() {
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 &
  pids+=($!)
  names+=("$name")
  logs+=("$log")
  local proc="$data/procs/${name// /-}"
  mkdir -p "$proc"
  printf '%s\0' "$@" >"$proc/argv"
  echo "$!" >"$proc/pid"
  echo "$log" >"$proc/log"
}

# Every process started is still running; else the cluster is stopped, with the failed one's log tail.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      fail "${names[$i]} exited" "${logs[$i]}"
    fi
  done
}

fail() {
  echo "local-cluster.sh: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "--- the last lines of $2 ---" >&2
    tail -n 20 "$2" >&2
  fi
  cleanup
  trap - EXIT
  [ "$command" = start ] && rm -f "$data/pids"
  exit 1
}

# Waits up to 60 s for master $1 to answer /readyz (so its store works) and, given "voter", for its store
# member to be a voter; else the run fails with its log's tail.
wait_master() {
  local i=$1 voter=${2:-}
  for _ in $(seq 1 300); do
    check_alive
    if [ -f "$data/m$i/admin.kubeconfig" ] &&
      "${hub[@]}" kubectl --kubeconfig "$data/m$i/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1 &&
      { [ -z "$voter" ] || kubectl get --raw /keel/v1/members 2>/dev/null | tr '{' '\n' |
        grep "\"name\":\"m$i\"" | grep -q '"isLearner":false'; }; then
      return 0
    fi
    sleep 0.2
  done
  fail "master m$i is not ready${voter:+ as a voter} after 60 s" "$data/m$i.log"
}

# `add-master`: the next master (m4, m5, …) on a host of its own joins the running cluster in one command,
# `keel server --join` with a join token from `keel server token create`, and is left running.
add_master() {
  export KUBECONFIG="$data/admin.kubeconfig"
  [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 ||
    { echo "local-cluster.sh: no cluster is running here (start one first)" >&2; exit 1; }
  [ -d "$data/s1" ] && { echo "local-cluster.sh: masters on an external store need no join (docs/operations.md)" >&2; exit 1; }
  local i=1
  while [ -d "$data/m$i" ]; do i=$((i + 1)); done
  if [ -z "$root" ] && ((i > ${#client_ports[@]})); then
    echo "local-cluster.sh: at most ${#client_ports[@]} masters when not root" >&2
    exit 1
  fi
  [ -n "$root" ] && bash deploy/hosts.sh add "m$i" >/dev/null
  local ip port api join
  ip=$(m_ip "$i") port=$(m_client "$i") api=$(m_api "$i")
  # "keel server --join <a master> --join-token <token> --join-ca-hash sha256:<pin>"
  read -ra join < <("$KEEL" server token create --for master --ttl 10m --description "local-cluster.sh add-master m$i" \
    --print-join-command --kubeconfig "$KUBECONFIG" 2>/dev/null)
  [ "${join[1]:-}" = server ] || { echo "local-cluster.sh: keel server token create failed" >&2; exit 1; }
  echo "${join[*]}" | sed 's/--join-token [^ ]*/--join-token <token>/'
  # shellcheck disable=SC2046
  launch "master m$i" "$data/m$i.log" $(on "m$i") "$KEEL" "${join[@]:1}" --name "m$i" --data-dir "$data/m$i" \
    --api-listen "$ip:$api" --listen-client-urls "http://$ip:$port" --advertise-client-urls "http://$ip:$port" \
    --listen-peer-urls "http://$ip:$((port + 1))" --initial-advertise-peer-urls "http://$ip:$((port + 1))"
  wait_master "$i" voter
  cat <<EOT
master m$i joined at https://$ip:$api (log $data/m$i.log): its store member is a voter, and the
kubernetes Endpoints, keel lb and every agent's load balancer now use it too.
  kubectl get --raw /keel/v1/members          # m$i listed, "isLearner": false
  kubectl get endpoints kubernetes
To remove it: kubectl delete --raw /keel/v1/members/<its id>, then kill it (docs/operations.md, section 5).
EOT
}
if [ "$command" = add-master ]; then
  add_master
  exit 0
fi

# The store: stacked members in the masters, or 3 members of their own.
state=new
if [ -n "$external" ]; then
  [ -d "$data/s1" ] && state=existing
  cluster=""
  for i in 1 2 3; do cluster+="${cluster:+,}s$i=http://$(s_ip $i):$(($(s_client $i) + 1))"; done
  endpoints=""
  for i in 1 2 3; do
    ip=$(s_ip $i) port=$(s_client $i)
    endpoints+="${endpoints:+,}http://$ip:$port"
    # shellcheck disable=SC2046
    launch "store member s$i" "$data/s$i.log" $(on "s$i") "$KEEL" kv --name "s$i" --data-dir "$data/s$i" \
      --listen-client-urls "http://$ip:$port" --advertise-client-urls "http://$ip:$port" \
      --listen-peer-urls "http://$ip:$((port + 1))" --initial-advertise-peer-urls "http://$ip:$((port + 1))" \
      --initial-cluster "$cluster" --initial-cluster-state "$state"
  done
else
  [ -d "$data/m1" ] && state=existing
  cluster=""
  for i in $(seq 1 "$masters"); do cluster+="${cluster:+,}m$i=http://$(m_ip "$i"):$(($(m_client "$i") + 1))"; done
fi

servers=""
for i in $(seq 1 "$masters"); do
  ip=$(m_ip "$i") port=$(m_client "$i") api=$(m_api "$i")
  servers+="${servers:+,}https://$ip:$api"
  if [ -n "$external" ]; then
    store=(--store-endpoints "$endpoints")
  else
    store=(--listen-client-urls "http://$ip:$port" --advertise-client-urls "http://$ip:$port"
      --listen-peer-urls "http://$ip:$((port + 1))" --initial-advertise-peer-urls "http://$ip:$((port + 1))"
      --initial-cluster "$cluster" --initial-cluster-state "$state")
  fi
  # shellcheck disable=SC2046
  launch "master m$i" "$data/m$i.log" $(on "m$i") "$KEEL" server --name "m$i" --data-dir "$data/m$i" \
    --api-listen "$ip:$api" "${store[@]}"
done

# Every master up and ready (its API answers /readyz, so its store works), within 60 s.
for i in $(seq 1 "$masters"); do wait_master "$i"; done

# kubectl's way in: a load balancer to every master, on this machine's loopback.
export KUBECONFIG="$data/admin.kubeconfig"
rm -f "$KUBECONFIG"
launch "keel lb" "$data/lb.log" "$KEEL" lb --kubeconfig "$data/m1/admin.kubeconfig" --server "$servers" \
  --listen "$lb_listen" "${lb_netns[@]}" --write-kubeconfig "$KUBECONFIG"
ready=
for _ in $(seq 1 100); do
  check_alive
  if [ -f "$KUBECONFIG" ] && kubectl get namespace default -o name >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || fail "kubectl cannot reach the masters through keel lb" "$data/lb.log"

if [ -n "$root" ]; then
  node_kind="$nodes nodes running containers (keel agent + containerd; logs in $data/node-*/)"
  tar=$(bash deploy/build-test-images.sh "$data/images")
  mkdir -p "$run"
  # Nodes join as themselves: a node join token, the CA pinned (keel agent --join … --join-token …
  # --join-ca-hash …); each agent gets a client certificate for system:node:<name> and uses nothing else.
  join=$("$KEEL" server token create --for node --print-join-command --kubeconfig "$KUBECONFIG" 2>/dev/null) ||
    fail "cannot make a node join token" "$data/lb.log"
  read -r _ _ _ join_url _ join_token _ join_hash <<<"$join"
  for n in $(seq 1 "$nodes"); do
    dir="$data/node-$n/containerd" sock="$run/node-$n.sock" ip=$(bash deploy/hosts.sh ip "$n")
    mkdir -p "$dir"
    printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s"\n' \
      "$dir" "$dir" "$sock" >"$dir/config.toml"
    launch "containerd of node-$n" "$data/node-$n/containerd.log" containerd --config "$dir/config.toml"
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
    "$KEEL" images import --containerd-socket "$sock" --containerd-namespace keel "$tar" >/dev/null
    # shellcheck disable=SC2046
    launch "agent of node-$n" "$data/node-$n/agent.log" $(on "$n") "$KEEL" agent \
      --join "$join_url" --join-token "$join_token" --join-ca-hash "$join_hash" \
      --server "$servers" --node-name "node-$n" --node-ip "$ip" \
      --listen "$ip:10250" --containerd-socket "$sock" --containerd-namespace keel \
      --data-dir "$data/node-$n/agent" --log-dir "$data/node-$n/logs" $(bash deploy/hosts.sh env "$n")
  done
else
  nodes=3
  node_kind="3 hollow nodes (not root: pods are reported Running without containers)"
  launch "hollow nodes" "$data/nodes.log" "$KEEL" hollow-nodes --kubeconfig "$data/m1/admin.kubeconfig" \
    --server "$servers" --count 3 --prefix node-
fi

# Every node registered and Ready within 60 s.
ready=
for _ in $(seq 1 120); do
  check_alive
  count=$(kubectl get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)
  if [ "$count" -ge "$nodes" ]; then ready=1; break; fi
  sleep 0.5
done
[ -n "$ready" ] || fail "only $count of $nodes nodes are Ready after 60 s" "${logs[-1]}"

kubectl apply -f deploy/sample/web.yaml
kubectl -n sample rollout status deployment/web --timeout=180s
kubectl get nodes -o wide
kubectl -n sample get deployments,pods,services,endpoints -o wide
store_kind="stacked store members"
[ -n "$external" ] && store_kind="an external store of 3 keel kv members"
etcd_at="$(m_ip 1):$(m_client 1)"
[ -n "$external" ] && etcd_at="$(s_ip 1):$(s_client 1)"
etcdctl="ETCDCTL_API=3 etcdctl --endpoints=$etcd_at"
[ -n "$root" ] && etcdctl="nsenter --net=/run/netns/khhub env $etcdctl"
cat <<EOT

keel cluster running: $masters masters on $store_kind (logs in $data/m*.log), $node_kind,
the sample app in namespace sample. kubectl goes through keel lb ($lb_listen) to any live master.
  export KUBECONFIG=$KUBECONFIG
  kubectl -n sample get pods -o wide
  kubectl -n sample logs deployment/web                       # httpd's request log (the probes)
  kubectl -n sample exec deployment/web -- wget -qO- localhost:8080/index.html
  kubectl -n sample exec deployment/web -- wget -qO- http://web.sample/      # the Service, by name
EOT
if [ -n "$root" ]; then
  cat <<EOT
  ${hub[*]} curl -H 'Host: web.sample.test' http://$(bash deploy/hosts.sh ip 1)/   # the Ingress, any node
  ${hub[*]} curl http://$(bash deploy/hosts.sh ip 2):30080/                   # the NodePort, any node
  # a two-tier app: a web tier reading from a Redis-like db by Service name, through its Ingress
  kubectl create namespace demo && kubectl apply -n demo -f deploy/sample/two-tier.yaml
  ${hub[*]} curl -H 'Host: app.test' http://$(bash deploy/hosts.sh ip 2)/cgi-bin/value
EOT
fi
cat <<EOT
  kubectl -n sample exec -it deployment/web -- sh
  kubectl -n sample scale deployment/web --replicas=6
  kubectl -n sample set env deployment/web GREETING=hi && kubectl -n sample rollout status deployment/web
  kubectl get --raw '/readyz?verbose'      # which master runs the control loops
  kubectl get endpoints kubernetes         # the live masters (what every node's load balancer follows)
  deploy/local-cluster.sh add-master       # one more master joins, with a join token
  $etcdctl get --prefix /registry/pods --keys-only
EOT
if [ -n "$root" ]; then
  echo "  kill -9 \$(pgrep -f 'server --name m1 ')   # any one master: nodes stay Ready, pods untouched"
fi
if [ -n "${KEEL_CLUSTER_DETACH:-}" ]; then
  echo "Detached: deploy/local-cluster.sh stop stops it."
  exit 0
fi
echo "Ctrl-C stops the cluster."
wait
