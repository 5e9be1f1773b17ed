#!/usr/bin/env bash
# Installs what building and testing keel needs on Debian 12 (run as root). Idempotent.
#   clang, libclang-dev   RocksDB's bindings (librocksdb-sys)
#   protobuf-compiler     protoc, for the .proto files in proto/
#   etcd-client           stock etcdctl 3.4, for the compatibility tests
#   etcd-server           etcd 3.4, the anchor of the benchmarks
#   iproute2, nftables    network namespaces and partitions for the chaos harness (chaos/)
#   iptables              its NFQUEUE target, for the harness's packet delay (the kernel has no nft queue)
#   conntrack             the agent's Service proxy deletes stale UDP flows with it
#   containerd, runc      the node agent's container runtime (tests start a containerd of their own)
#   containernetworking-plugins  the CNI plugins the agent gives pods their network with
#   busybox-static        the test images (deploy/build-test-images.sh; no downloads from the internet)
#   skopeo, docker-registry  a loopback registry for the agent's image pull tests
set -euo pipefail
packages=(clang libclang-dev protobuf-compiler etcd-client etcd-server iproute2 nftables iptables conntrack
  containerd runc containernetworking-plugins busybox-static skopeo docker-registry)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The harness's power cuts mount a FUSE file system of its own (chaos/src/lazyfs.rs; no libfuse needed).
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
fi
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
# The masters' tests drive the installed kubectl (Debian has no package for it; it is part of the machine).
command -v kubectl >/dev/null || { echo "kubectl is missing: the masters' tests need it on PATH" >&2; exit 1; }
# The Python client test (tests/python) drives the official `kubernetes` client of the API version keel
# serves (1.33: the client's 33.x releases).
command -v python3 >/dev/null || { echo "python3 is missing: the Python client test needs it" >&2; exit 1; }
if ! python3 -c 'import sys, kubernetes; sys.exit(not kubernetes.__version__.startswith("33."))' 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore 'kubernetes==33.*'
fi
echo "keel build and test dependencies are installed"
