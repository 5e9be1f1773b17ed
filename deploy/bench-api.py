#!/usr/bin/env python3
"""Kubernetes API latency of keel's masters next to the floor etcd sets, in one run.

Starts 3 stacked keel masters (`keel server`: the API over HTTPS on its own store member) and a 3-member
etcd (Debian's etcd-server, 3.4) on 127.0.0.1 free ports, each on its own data dirs under a temporary
directory, and for each round runs, at the same concurrency (50 clients by default):

- keel API: `keel bench api` — ConfigMaps created, read by name, listed a page at a time (limit=100) over
  HTTPS/HTTP/2 with the admin token, clients spread over the three masters;
- etcd floor: `keel bench kv kube` against etcd — the store operations a kube-apiserver performs for those
  requests (create-if-absent transaction, one-key range, prefix range with the same limit) with values of
  the size keel stored: no Kubernetes API server on etcd can be faster than this;
- keel store: the same `keel bench kv kube` against the masters' own store members, so that the cost of
  keel's API layer over its store shows.

Each round runs the three sides in a rotated order, each after compacting its store (as a kube-apiserver
does every 5 minutes), and notes the machine's load average before each (it counts the previous side's own
processes too). Prints
a Markdown table and whether the goal (create p99 <= 50 ms) is met. Everything it starts is killed
and its temporary directory removed at the end (kept, with the logs, when something fails).

Usage: deploy/bench-api.py [--quick] [--rounds 3] [--clients 50] [--keel PATH]
"""
import argparse, importlib.util, json, os, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("bench_vs_etcd", os.path.join(ROOT, "deploy", "bench-vs-etcd.py"))
vs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs)
sh, Cluster = vs.sh, vs.Cluster

GOAL_CREATE_P99_MS = 50.0
PHASES = ("create", "get", "list")


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base(start, taken=()):
    """A base port p such that p..p+29 (three members' client, peer and API ports: p + 10i, +1, +2) are free."""
    for base in range(start, 60000, 100):
        if base not in taken and all(port_free(base + i) for i in range(30)):
            return base
    raise RuntimeError("no free ports")


def wait_api(masters, timeout=120):
    """Each master's admin.kubeconfig exists and its API port accepts connections."""
    deadline = time.time() + timeout
    paths = [os.path.join(m["dir"], "admin.kubeconfig") for m in masters.members]
    while time.time() < deadline:
        ready = 0
        for path, port in zip(paths, masters.api_ports):
            if os.path.exists(path):
                with socket.socket() as s:
                    ready += s.connect_ex(("127.0.0.1", port)) == 0
        if ready == len(paths):
            return paths
        time.sleep(0.2)
    raise RuntimeError(f"the masters did not start serving (logs in {masters.workdir})")


def compact(cluster):
    """Compacts the store to its current revision, as a kube-apiserver does every 5 minutes: etcd 3.4 runs
    about 3x slower on the round after one that left 10 000 deleted keys uncompacted (creates and gets alike)."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    st = json.loads(sh(["etcdctl", f"--endpoints={cluster.endpoints()}", "endpoint", "status", "-w", "json"],
                       env=env).stdout)
    rev = max(s["Status"]["header"]["revision"] for s in st)
    r = sh(["etcdctl", f"--endpoints={cluster.endpoints()}", "compact", str(rev)], env=env)
    if r.returncode != 0 and "compacted" not in r.stderr:
        raise RuntimeError(f"cannot compact {cluster.kind}: {r.stderr.strip()}")


def run_json(cmd):
    """Runs a `keel bench … --json` command: its JSON lines, by workload."""
    r = sh(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            out[j["workload"]] = j
    return out


def row(label, r):
    if r.get("errors"):
        label += f" ({r['errors']} errors)"
    return (f"| {label} | {r['ops_per_sec']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['max_ms']:.2f} | {r['load']:.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller phases, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--list-limit", type=int, default=100)
    ap.add_argument("--keel", default=None, help="the keel binary (default: build a release one)")
    a = ap.parse_args()
    creates, gets, lists = (10000, 30000, 3000)
    if a.quick:
        a.rounds, (creates, gets, lists) = 1, (1000, 5000, 500)
    keel = a.keel
    if not keel:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keel"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        keel = os.path.join(target, "release", "keel")
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    work = tempfile.mkdtemp(prefix="keel-bench-api-")
    kbase = free_base(23000)
    ebase = free_base(kbase + 100)
    masters = Cluster("keel", keel, kbase, work, api_ports=[kbase + i * 10 + 2 for i in range(3)])
    etcds = Cluster("etcd", etcd, ebase, work)
    phases = ["--clients", str(a.clients), "--creates", str(creates), "--gets", str(gets), "--lists", str(lists),
              "--list-limit", str(a.list_limit)]
    load_before = os.getloadavg()
    results = []
    try:
        fsync = sh([sys.executable, os.path.join(ROOT, "deploy", "fsync-latency.py"), work, "2000"]).stdout.strip()
        version = sh([etcd, "--version"]).stdout.splitlines()[0]
        masters.start_all()
        etcds.start_all()
        kubeconfigs = wait_api(masters)
        # The object size the floor writes: what keel stores for one ConfigMap (measured by a first API run).
        size = 0
        for rnd in range(a.rounds):
            # The three sides in a different order each round, so that a load spike from elsewhere on the
            # machine does not always hit the same side; the 1-minute load average is noted before each.
            sides = ["keel API", "keel store", "etcd floor"]
            sides = sides[rnd % 3:] + sides[:rnd % 3]
            if size == 0 and sides[0] != "keel API":
                sides.remove("keel API")
                sides.insert(0, "keel API")
            res, loads = {p: {} for p in PHASES}, {}
            for side in sides:
                compact(etcds if side == "etcd floor" else masters)
                loads[side] = os.getloadavg()[0]
                if side == "keel API":
                    out = run_json([keel, "bench", "api", "--kubeconfig", ",".join(kubeconfigs), "--json", *phases])
                    size = size or out["api-objects"]["object_bytes"]
                    prefix = "api"
                else:
                    eps = masters.endpoints() if side == "keel store" else etcds.endpoints()
                    kv = ["kube", *phases, "--value-size", str(size)]
                    out = run_json([keel, "bench", "kv", "--endpoints", eps, "--json", *kv])
                    prefix = "kube"
                for p in PHASES:
                    res[p][side] = {**out[f"{prefix}-{p}"], "load": loads[side]}
                    print(f"round {rnd + 1} {p:6} {side:10} {json.dumps(res[p][side])}", flush=True)
            res["size"], res["order"] = size, sides
            results.append(res)
    except Exception:
        masters.stop()
        etcds.stop()
        print(f"failed; data dirs and logs kept in {work}", flush=True)
        raise
    masters.stop()
    etcds.stop()
    shutil.rmtree(work, ignore_errors=True)
    report(results, a, (creates, gets, lists), fsync, version, load_before, os.getloadavg())


def report(results, a, counts, fsync, version, load_before, load_after):
    creates, gets, lists = counts
    print("\n## Results\n")
    print(f"Machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{fsync}")
    print(f"keel: 3 stacked masters on 127.0.0.1, clients spread over them (HTTP/2, TLS, bearer token). "
          f"Anchor: {version} (Debian etcd-server), 3 members on 127.0.0.1.")
    print(f"{a.clients} clients; per round {creates} creates, {gets} gets, {lists} lists of {a.list_limit} "
          f"objects; objects of {results[0]['size']} bytes.\n")
    for rnd, res in enumerate(results):
        print(f"Round {rnd + 1} order: {', '.join(res['order'])}.")
    print("\n| phase, side | ops/s | p50 ms | p90 ms | p99 ms | max ms | load avg at start |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in PHASES:
        for side in ("keel API", "etcd floor", "keel store"):
            for rnd, res in enumerate(results):
                label = f"{p}, {side}" + (f", round {rnd + 1}" if len(results) > 1 else "")
                print(row(label, res[p][side]))
    api = ", ".join(f"{res['create']['keel API']['p99_ms']:.1f}" for res in results)
    floor = ", ".join(f"{res['create']['etcd floor']['p99_ms']:.1f}" for res in results)
    met = all(res["create"]["keel API"]["p99_ms"] <= GOAL_CREATE_P99_MS for res in results)
    print(f"\nGoal create p99 <= {GOAL_CREATE_P99_MS:.0f} ms: {'met' if met else 'missed'} "
          f"(keel API create p99 {api} ms; etcd floor {floor} ms)")


if __name__ == "__main__":
    main()
