#!/usr/bin/env python3
"""keel vs etcd on this machine, in one run.

Starts a 3-member etcd (Debian's etcd-server, 3.4) and a 3-member keel store on 127.0.0.1, each with its own
data dirs under a temporary directory, and runs the same workloads against both with `keel bench kv`
(which speaks the etcd API): writes at 1, 16 and 256 clients, linearizable and serializable reads, watch
delivery to many watchers, `etcdctl check perf`, kill -9 of the leader (time to the first acknowledged write,
over N trials), and elections during an idle period. Prints a Markdown report (ratios keel/etcd) and the
machine's fsync latency. Everything it starts is stopped and removed at the end.

Usage: deploy/bench-vs-etcd.py [--trials 20] [--idle 600] [--quick] [--keel PATH]
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Cluster:
    """Three members of one kind ("etcd" or "keel") on loopback. With `api_ports` (keel only), each member is
    a stacked master (`keel server`) serving the Kubernetes API on 127.0.0.1 at its port."""

    def __init__(self, kind, binary, base_port, workdir, api_ports=None):
        self.kind, self.binary, self.workdir, self.api_ports = kind, binary, workdir, api_ports
        self.members = []
        for i in range(3):
            client, peer = base_port + i * 10, base_port + i * 10 + 1
            self.members.append({"name": f"{kind}{i}", "client": client, "peer": peer, "proc": None,
                                 "dir": os.path.join(workdir, f"{kind}{i}")})
        self.initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)

    def endpoints(self):
        return ",".join(f"127.0.0.1:{m['client']}" for m in self.members)

    def start(self, i):
        m = self.members[i]
        flags = ["--name", m["name"], "--data-dir", m["dir"],
                 "--listen-client-urls", f"http://127.0.0.1:{m['client']}",
                 "--advertise-client-urls", f"http://127.0.0.1:{m['client']}",
                 "--listen-peer-urls", f"http://127.0.0.1:{m['peer']}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{m['peer']}",
                 "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"bench-{self.kind}"]
        if self.api_ports:
            sub = ["server", "--api-listen", f"127.0.0.1:{self.api_ports[i]}"]
        else:
            sub = ["kv"] if self.kind == "keel" else []
        cmd = [self.binary] + sub + flags
        log = open(os.path.join(self.workdir, f"{m['name']}.log"), "a")
        m["proc"] = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def start_all(self):
        for i in range(3):
            self.start(i)
        self.wait_healthy()

    def wait_healthy(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = sh(["etcdctl", f"--endpoints={self.endpoints()}", "endpoint", "status", "-w", "json"],
                   env={**os.environ, "ETCDCTL_API": "3"})
            if r.returncode == 0:
                st = json.loads(r.stdout)
                leaders = {s["Status"].get("leader", 0) for s in st}
                if len(st) == 3 and len(leaders) == 1 and 0 not in leaders:
                    return st
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not become healthy (logs in {self.workdir})")

    def term(self):
        st = self.wait_healthy()
        return max(s["Status"].get("raftTerm", 0) for s in st)

    def pids(self):
        return ",".join(str(m["proc"].pid) for m in self.members)

    def restart_dead(self):
        for i, m in enumerate(self.members):
            if m["proc"].poll() is not None:
                self.start(i)
        self.wait_healthy()

    def stop(self):
        for m in self.members:
            if m["proc"] and m["proc"].poll() is None:
                m["proc"].send_signal(signal.SIGKILL)
                m["proc"].wait()


def bench(keel, cluster, *args):
    r = sh([keel, "bench", "kv", "--endpoints", cluster.endpoints(), "--json", *args])
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def check_perf(cluster, load):
    r = sh(["etcdctl", f"--endpoints={cluster.endpoints()}", "check", "perf", f"--load={load}"],
           env={**os.environ, "ETCDCTL_API": "3"})
    out = r.stdout + r.stderr
    lines = [l for l in out.replace("\r", "\n").splitlines() if l.startswith(("PASS", "FAIL"))]
    return ("PASS" if r.returncode == 0 else "FAIL") + ": " + "; ".join(lines)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--idle", type=int, default=600, help="seconds of idleness to count elections over")
    ap.add_argument("--quick", action="store_true", help="smaller workloads, 3 trials, 30 s idle")
    ap.add_argument("--keel", default=None, help="the keel binary (default: build a release one)")
    ap.add_argument("--only", choices=["etcd", "keel"], help="run one side only (no ratios; for profiling)")
    a = ap.parse_args()
    if a.quick:
        a.trials, a.idle = 3, 30
    keel = a.keel
    if not keel:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keel"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        keel = os.path.join(target, "release", "keel")
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    work = tempfile.mkdtemp(prefix="keel-bench-")
    clusters = [Cluster("etcd", etcd, 21000, work), Cluster("keel", keel, 22000, work)]
    if a.only:
        clusters = [c for c in clusters if c.kind == a.only]
    results = {c.kind: {} for c in clusters}
    try:
        fsync = sh([sys.executable, os.path.join(ROOT, "deploy", "fsync-latency.py"), work, "2000"]).stdout.strip()
        version = sh([etcd, "--version"]).stdout.splitlines()[0]
        n = 1 if a.quick else 3
        workloads = [
            ("put, 1 client", ["put", "--clients", "1", "--total", str(1000 * n)]),
            ("put, 16 clients", ["put", "--clients", "16", "--total", str(5000 * n)]),
            ("put, 256 clients", ["put", "--clients", "256", "--total", str(10000 * n)]),
            ("range linearizable, 16 clients", ["range", "--clients", "16", "--total", str(10000 * n), "--consistency", "l"]),
            ("range linearizable, 256 clients", ["range", "--clients", "256", "--total", str(20000 * n), "--consistency", "l"]),
            ("range serializable, 16 clients", ["range", "--clients", "16", "--total", str(10000 * n), "--consistency", "s"]),
            ("watch delivery, 1000 watchers", ["watch", "--watchers", "1000", "--puts", str(20 * n)]),
        ]
        for c in clusters:
            c.start_all()
            for name, args in workloads:
                results[c.kind][name] = bench(keel, c, *args)
                print(f"{c.kind:5} {name:32} {results[c.kind][name]}", flush=True)
            for load in (["m"] if a.quick else ["m", "l"]):
                results[c.kind][f"check perf {load}"] = check_perf(c, load)
                print(f"{c.kind:5} check perf {load}: {results[c.kind][f'check perf {load}']}", flush=True)
            times = []
            for t in range(a.trials):
                r = sh([keel, "bench", "kv", "--endpoints", c.endpoints(), "--json", "failover", "--pids", c.pids()])
                if r.returncode == 0:
                    times.append(json.loads(r.stdout.strip().splitlines()[-1])["first_write_ms"])
                else:
                    print(f"{c.kind} failover trial {t}: {r.stderr.strip()[-200:]}", flush=True)
                c.restart_dead()
                time.sleep(1)
            results[c.kind]["failover"] = times
            print(f"{c.kind:5} failover ms: {[round(x) for x in times]}", flush=True)
        # Both idle at once: elections counted as raft term changes.
        before = {c.kind: c.term() for c in clusters}
        time.sleep(a.idle)
        for c in clusters:
            results[c.kind]["idle elections"] = c.term() - before[c.kind]
        if not a.only:
            report(results, workloads, fsync, version, a)
    except Exception:
        for c in clusters:
            c.stop()
        print(f"failed; data dirs and logs kept in {work}", flush=True)
        raise
    for c in clusters:
        c.stop()
    shutil.rmtree(work, ignore_errors=True)


def report(results, workloads, fsync, version, a):
    e, k = results["etcd"], results["keel"]
    print("\n## Results\n")
    print(f"Machine: {os.cpu_count()} cores; {fsync}")
    print(f"Anchor: {version} (Debian etcd-server), 3 members on 127.0.0.1; keel 3 members on 127.0.0.1; both default timings.\n")
    print("| workload | etcd ops/s | keel ops/s | keel/etcd | etcd p50 / p99 ms | keel p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in workloads:
        er, kr = e.get(name, {}), k.get(name, {})
        if "error" in er or "error" in kr:
            print(f"| {name} | {er.get('error', '')} | {kr.get('error', '')} | | | |")
            continue
        ratio = kr["ops_per_sec"] / er["ops_per_sec"] if er.get("ops_per_sec") else float("nan")
        print(f"| {name} | {er['ops_per_sec']:.0f} | {kr['ops_per_sec']:.0f} | {ratio:.2f}x | "
              f"{er['p50_ms']:.2f} / {er['p99_ms']:.2f} | {kr['p50_ms']:.2f} / {kr['p99_ms']:.2f} |")
    print()
    for key in [x for x in e if x.startswith("check perf")]:
        print(f"- `etcdctl check perf --load={key[-1]}`: etcd {e[key]} — keel {k[key]}")
    for kind, r in (("etcd", e), ("keel", k)):
        f = r["failover"]
        print(f"- leader kill -9 → first acknowledged write, {kind}: p50 {pct(f, .5):.0f} ms, p99 {pct(f, .99):.0f} ms "
              f"over {len(f)} trials (max {max(f) if f else float('nan'):.0f} ms)")
    print(f"- elections while idle for {a.idle} s: etcd {e['idle elections']}, keel {k['idle elections']}")


if __name__ == "__main__":
    main()
