#!/usr/bin/env python3
"""The control loops' benchmarks (issue "Control loops"), on 3 stacked masters on 127.0.0.1:

1. Scheduler throughput: 1000 hollow nodes (`keel hollow-nodes --ignore-pods`: registered and renewing their
   Leases, no kubelet, as kube-scheduler's scheduler_perf runs), then `keel bench scheduler`: 10 000 pods
   created by 50 concurrent clients; pods bound per second. Goal >= 2000 pods/s; kube-scheduler's
   scheduler_perf threshold is 680 pods/s (no kube-scheduler can run here: Debian packages no Kubernetes
   control plane, so that figure is quoted, not measured).
2. Failover: the 1000 nodes are removed; 3 hollow nodes, one process per master; then --trials times
   `keel bench control-failover`: kill -9 of the master leading the control loops, and through another master
   the time until a write is acknowledged, a new pod is bound by the new leader's scheduler, and a Deployment
   scaled up gets its new replica from the new leader's controllers. The killed master is restarted between
   trials. Goal p50 < 1 s (Kubernetes: ~15 s with default leader-election leases).

    deploy/bench-control.py [--quick] [--trials N] [--keel PATH]
"""
import argparse, importlib.util, json, os, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "deploy", file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


vs = load("bench_vs_etcd", "bench-vs-etcd.py")
api = load("bench_api", "bench-api.py")
sh, Cluster, pct = vs.sh, vs.Cluster, vs.pct


def run_json(cmd):
    r = sh(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    print(r.stdout.strip().splitlines()[0], flush=True)
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])["result"]


def kubectl(kubeconfig, *args):
    return sh(["kubectl", f"--kubeconfig={kubeconfig}", *args])


def wait_nodes(kubeconfig, n, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = kubectl(kubeconfig, "get", "nodes", "-o", "name")
        if r.returncode == 0 and len(r.stdout.split()) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"fewer than {n} nodes after {timeout} s")


def hollow(keel, kubeconfig, prefix, count, work):
    log = open(os.path.join(work, f"hollow-{prefix}log"), "a")
    return subprocess.Popen([keel, "hollow-nodes", "--kubeconfig", kubeconfig, "--count", str(count),
                             "--prefix", prefix, "--ignore-pods"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2000 pods on 200 nodes, 5 trials")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--keel", default=None, help="the keel binary (default: build a release one)")
    a = ap.parse_args()
    if a.quick:
        a.nodes, a.pods, a.trials = 200, 2000, 5
    keel = a.keel
    if not keel:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keel"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        keel = os.path.join(target, "release", "keel")
    work = tempfile.mkdtemp(prefix="keel-bench-control-")
    base = api.free_base(24000)
    masters = Cluster("keel", keel, base, work, api_ports=[base + i * 10 + 2 for i in range(3)])
    hollows = []
    try:
        masters.start_all()
        kubeconfigs = api.wait_api(masters)
        load_before = os.getloadavg()[0]

        big = hollow(keel, kubeconfigs[0], "node-", a.nodes, work)
        hollows.append(big)
        wait_nodes(kubeconfigs[0], a.nodes)
        time.sleep(2)
        sched = run_json([keel, "bench", "scheduler", "--kubeconfig", kubeconfigs[1], "--pods", str(a.pods),
                          "--json"])
        load_sched = os.getloadavg()[0]
        big.send_signal(signal.SIGTERM)
        big.wait()
        kubectl(kubeconfigs[0], "delete", "nodes", "-l", "keel.dev/hollow=true", "--wait=false")

        for i, k in enumerate(kubeconfigs):
            hollows.append(hollow(keel, k, f"fo{i}-", 1, work))
        wait_nodes(kubeconfigs[0], 3)
        trials = []
        for t in range(a.trials):
            try:
                r = run_json([keel, "bench", "control-failover", "--kubeconfigs", ",".join(kubeconfigs),
                              "--pids", masters.pids(), "--json"])
                trials.append(r)
            except RuntimeError as e:
                print(f"trial {t}: {e}", flush=True)
            masters.restart_dead()
            api.wait_api(masters)
            time.sleep(3)
    except Exception:
        print(f"failed; data dirs and logs kept in {work}", flush=True)
        raise
    finally:
        for h in hollows:
            if h.poll() is None:
                h.send_signal(signal.SIGTERM)
                h.wait()
        masters.stop()
    shutil.rmtree(work, ignore_errors=True)
    report(a, sched, trials, load_before, load_sched)


def report(a, sched, trials, load_before, load_sched):
    print()
    print(f"## Scheduler: {sched['pods']} pods on {sched['nodes']} hollow nodes, 3 masters")
    print()
    print("| pods/s bound (whole run) | per-second average | created in s | all bound after s | "
          "create→bound p50 ms | p99 ms | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {sched['bound_per_sec']:.0f} | {sched['per_second_avg']:.0f} | {sched['create_secs']:.2f} | "
          f"{sched['total_secs']:.2f} | {sched['latency_p50_ms']:.0f} | {sched['latency_p99_ms']:.0f} | "
          f"{load_before:.1f}→{load_sched:.1f} |")
    print(f"\nper-second bound counts: {sched['per_second']}")
    print()
    print(f"## Failover: {len(trials)} of {a.trials} trials, kill -9 of the leading master")
    print()
    print("| from the kill to | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for key, label in (("write_ms", "a write acknowledged"), ("bind_ms", "a new pod bound"),
                       ("controllers_ms", "a scaled Deployment's new replica")):
        v = [t[key] for t in trials]
        if v:
            print(f"| {label} | {pct(v, 0.5):.0f} | {pct(v, 0.99):.0f} | {max(v):.0f} |")
    print(f"\ntrials (write, bind, controllers ms): "
          f"{[(round(t['write_ms']), round(t['bind_ms']), round(t['controllers_ms'])) for t in trials]}")


if __name__ == "__main__":
    main()
