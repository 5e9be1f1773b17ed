#!/usr/bin/env bash
# Several keel nodes on one machine: each node's "host" network is a network namespace, joined to the others
# through a hub namespace's bridge, with routes so that pods on different nodes reach each other by pod IP.
#
#   deploy/hosts.sh up N     make hosts 1..N      deploy/hosts.sh down     remove them
#   deploy/hosts.sh env I    print the `keel agent` flags for host I
#
# Host I is the namespace ${PREFIX}I (default kh1, kh2, ...) at 10.200.0.(10+I)/24 on the hub's bridge; its
# pods get 10.244.I.0/24 (the agent's --pod-cidr), and every other host's pod CIDR is routed through that
# host's address. Nothing is added to the machine's own network namespace: an agent keeps running in the
# machine's namespace (it talks to the masters on 127.0.0.1) and runs the CNI plugins in its host with
# `--cni-netns /run/netns/${PREFIX}I`. Needs root and iproute2.
#
# KEEL_HOSTS_PREFIX changes the namespace prefix (tests use their own, so runs never collide); the hub is
# ${PREFIX}hub and its bridge ${PREFIX}br.
set -euo pipefail

PREFIX=${KEEL_HOSTS_PREFIX:-kh}
HUB="${PREFIX}hub"
BRIDGE="${PREFIX}br"

host_ip() { echo "10.200.0.$((10 + $1))"; }

up() {
  local n=$1
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 200)) || { echo "hosts.sh: N must be 1..200, got '$n'" >&2; exit 2; }
  ip netns add "$HUB"
  ip -n "$HUB" link set lo up
  ip -n "$HUB" link add "$BRIDGE" type bridge
  ip -n "$HUB" link set "$BRIDGE" up
  for i in $(seq 1 "$n"); do
    local ns="${PREFIX}${i}"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # eth0 in the host, its peer on the hub's bridge.
    ip -n "$ns" link add eth0 type veth peer name "h${i}" netns "$HUB"
    ip -n "$HUB" link set "h${i}" master "$BRIDGE" up
    ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" sysctl -q -w net.ipv4.ip_forward=1
  done
  for i in $(seq 1 "$n"); do
    for j in $(seq 1 "$n"); do
      [[ $i == "$j" ]] && continue
      ip -n "${PREFIX}${i}" route add "10.244.${j}.0/24" via "$(host_ip "$j")"
    done
  done
  echo "hosts.sh: ${n} hosts up (${PREFIX}1..${PREFIX}${n}, hub ${HUB})"
}

down() {
  local found=0
  for ns in $(ip netns list | awk '{print $1}'); do
    if [[ $ns =~ ^${PREFIX}[0-9]+$ || $ns == "$HUB" ]]; then
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
  up) up "${2:-}" ;;
  down) down ;;
  env) env_for "${2:?host number}" ;;
  *) echo "usage: hosts.sh up N | down | env I" >&2; exit 2 ;;
esac
