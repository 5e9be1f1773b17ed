#!/usr/bin/env bash
# Several keel machines on one machine: each node's, master's or store member's "host" network is a network
# namespace, joined to the others through a hub namespace's bridge, with routes so that pods on different
# nodes reach each other by pod IP.
#
#   deploy/hosts.sh up N [--masters M] [--stores S]   make node hosts 1..N (and master, store hosts)
#   deploy/hosts.sh add mI|sI                          add one master (store) host to hosts that are up
#   deploy/hosts.sh down                               remove them all
#   deploy/hosts.sh env I                              print the `keel agent` flags for node host I
#   deploy/hosts.sh ip I|mI|sI                         print host I's (master I's, store member I's) address
#
# Node host I is the namespace ${PREFIX}I (default kh1, kh2, ...) at 10.200.0.(10+I)/24 on the hub's bridge;
# its pods get 10.244.I.0/24 (the agent's --pod-cidr), and every other node's pod CIDR is routed through that
# node's address (in every master host too). Master host I is ${PREFIX}mI at 10.200.0.(100+I), store host I ${PREFIX}sI at
# 10.200.0.(150+I). The hub's bridge has 10.200.0.1, so that a program on the machine can reach the hosts by
# making its sockets inside the hub (`keel lb --netns /run/netns/${PREFIX}hub`). Nothing is added to the
# machine's own network namespace. Run a program in a host with `nsenter --net=/run/netns/NAME` (not
# `ip netns exec`, whose private mount namespace and /sys would hide the agent's mounts from containerd).
# A partition between two hosts is one nftables rule in either (see chaos/). Needs root and iproute2.
#
# KEEL_HOSTS_PREFIX changes the namespace prefix (tests use their own, so runs never collide); the hub is
# ${PREFIX}hub and its bridge ${PREFIX}br.
set -euo pipefail

PREFIX=${KEEL_HOSTS_PREFIX:-kh}
HUB="${PREFIX}hub"
BRIDGE="${PREFIX}br"

host_ip() {
  case "$1" in
    m*) echo "10.200.0.$((100 + ${1#m}))" ;;
    s*) echo "10.200.0.$((150 + ${1#s}))" ;;
    *) echo "10.200.0.$((10 + $1))" ;;
  esac
}

# One host: namespace ${PREFIX}$1 with eth0 at its address on the hub's bridge ($2 names its hub-side link).
add_host() {
  local name=$1 link=$2 ns="${PREFIX}$1"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "$link" netns "$HUB"
  ip -n "$HUB" link set "$link" master "$BRIDGE" up
  ip -n "$ns" addr add "$(host_ip "$name")/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# The node hosts' numbers, from the namespaces that exist.
node_numbers() { ip netns list | awk '{print $1}' | sed -n "s/^${PREFIX}\([0-9][0-9]*\)\$/\1/p" | sort -n; }

# Routes in host $1 (I or mI) to every other node host's pod CIDR, through that node's address. Masters get
# them too: they call admission webhooks at the pod addresses of the webhooks' Services, as kube-apiserver
# does.
route_pods() {
  local from=$1 j
  for j in $(node_numbers); do
    [[ $from == "$j" ]] && continue
    ip -n "${PREFIX}${from}" route replace "10.244.${j}.0/24" via "$(host_ip "$j")"
  done
}

up() {
  local n=$1 masters=0 stores=0
  shift
  while (($#)); do
    case "$1" in
      --masters) masters=${2:-}; shift 2 ;;
      --stores) stores=${2:-}; shift 2 ;;
      *) echo "hosts.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
  done
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 80)) || { echo "hosts.sh: N must be 1..80, got '$n'" >&2; exit 2; }
  [[ $masters =~ ^[0-9]+$ ]] && ((masters <= 40)) || { echo "hosts.sh: --masters must be 0..40" >&2; exit 2; }
  [[ $stores =~ ^[0-9]+$ ]] && ((stores <= 40)) || { echo "hosts.sh: --stores must be 0..40" >&2; exit 2; }
  ip netns add "$HUB"
  ip -n "$HUB" link set lo up
  ip -n "$HUB" link add "$BRIDGE" type bridge
  ip -n "$HUB" addr add 10.200.0.1/24 dev "$BRIDGE"
  ip -n "$HUB" link set "$BRIDGE" up
  for i in $(seq 1 "$n"); do
    add_host "$i" "h${i}"
    ip netns exec "${PREFIX}${i}" sysctl -q -w net.ipv4.ip_forward=1
  done
  for i in $(seq 1 "$masters"); do add_host "m$i" "hm${i}"; done
  for i in $(seq 1 "$stores"); do add_host "s$i" "hs${i}"; done
  for i in $(seq 1 "$n"); do route_pods "$i"; done
  for i in $(seq 1 "$masters"); do route_pods "m$i"; done
  echo "hosts.sh: ${n} node hosts (${PREFIX}1..${PREFIX}${n}), ${masters} master hosts, ${stores} store hosts up (hub ${HUB})"
}

down() {
  local found=0
  for ns in $(ip netns list | awk '{print $1}'); do
    if [[ $ns =~ ^${PREFIX}[ms]?[0-9]+$ || $ns == "$HUB" ]]; then
      ip netns delete "$ns"
      found=$((found + 1))
    fi
  done
  echo "hosts.sh: removed ${found} namespaces"
}

env_for() {
  local i=$1
  echo "--pod-cidr 10.244.${i}.0/24 --cni-netns /run/netns/${PREFIX}${i} --cni-bridge keel${i}"
}

case "${1:-}" in
  up) shift; up "${1:-}" "${@:2}" ;;
  down) down ;;
  add)
    [[ ${2:-} =~ ^[ms][0-9]+$ ]] || { echo "hosts.sh: add takes mI or sI" >&2; exit 2; }
    ip netns list | grep -q "^${HUB}\b" || { echo "hosts.sh: the hosts are not up" >&2; exit 1; }
    if ! ip netns list | grep -q "^${PREFIX}$2\b"; then # there already: nothing to do
      add_host "$2" "h$2"
      [[ $2 == m* ]] && route_pods "$2"
    fi
    ;;
  env) env_for "${2:?host number}" ;;
  ip) host_ip "${2:?host: I, mI or sI}" ;;
  *) echo "usage: hosts.sh up N [--masters M] [--stores S] | add mI|sI | down | env I | ip I|mI|sI" >&2; exit 2 ;;
esac
