#!/usr/bin/env python3
"""Pod startup latency (issue "Node agent"): pods created → Running on one real node, image present, with
bare containerd (`ctr run`) measured side by side in the same run as the anchor. Needs root.

keel: 3 stacked masters on 127.0.0.1, one `keel agent` on a containerd of its own (its host network a
namespace from deploy/hosts.sh, the busybox image from deploy/build-test-images.sh imported), and
`keel bench pod-startup`: --pods pods (one container, `sleep 3600`, imagePullPolicy Never), each timed from its
create request sent to its watch event with phase Running, at most P starting at once (P from --parallel).
That is Kubernetes' pod startup SLI (goal p99 <= 1 s; Kubernetes' SLO is 5 s).

Anchor: the same containerd, another containerd namespace with the same image, `ctr run -d` of the same
command, each timed from the ctr process started to its exit (the task is started then), at most P at once.
It has no API, scheduler, status or pod network: the floor of starting a container here.

    deploy/bench-pods.py [--quick] [--rounds N] [--pods N] [--parallel 1,10,100] [--keel PATH]
"""
import argparse, concurrent.futures, importlib.util, json, os, shutil, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS_PREFIX = "kbp"
RUN = "/run/keel-bench-pods"
CTR_NS = "keel-bench-ctr"
IMAGE = "keel.test/busybox:1"


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "deploy", file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


vs = load("bench_vs_etcd", "bench-vs-etcd.py")
api = load("bench_api", "bench-api.py")
sh, Cluster, pct = vs.sh, vs.Cluster, vs.pct


def hosts(*args):
    return subprocess.run(["bash", os.path.join(ROOT, "deploy", "hosts.sh"), *args], check=True, text=True,
                          capture_output=True, env={**os.environ, "KEEL_HOSTS_PREFIX": HOSTS_PREFIX}).stdout


class Node:
    """containerd on its own root, state and socket, and a `keel agent` on it."""

    def __init__(self, keel, work):
        self.keel, self.work = keel, work
        self.dir = os.path.join(work, "containerd")
        self.sock = os.path.join(RUN, "containerd.sock")
        self.containerd = self.agent = None

    def ctr(self, *args, check=True):
        r = sh(["ctr", "-a", self.sock, "-n", CTR_NS, *args])
        if check and r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {r.stderr.strip()}")
        return r

    def start(self, kubeconfig, image_tar, agent_port):
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(RUN, exist_ok=True)
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.sock}"\n')
        log = open(os.path.join(self.work, "containerd.log"), "a")
        self.containerd = subprocess.Popen(["containerd", "--config", config], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if os.path.exists(self.sock):
                break
            time.sleep(0.1)
        for ns in ("keel", CTR_NS):
            r = sh([self.keel, "images", "import", "--containerd-socket", self.sock, "--containerd-namespace", ns,
                    image_tar])
            if r.returncode != 0:
                raise RuntimeError(f"image import into {ns}: {r.stderr.strip()}")
        hosts("up", "1")
        flags = hosts("env", "1").split()
        log = open(os.path.join(self.work, "agent.log"), "a")
        self.agent = subprocess.Popen(
            [self.keel, "agent", "--kubeconfig", kubeconfig, "--node-name", "bench-node",
             "--containerd-socket", self.sock, "--containerd-namespace", "keel",
             "--data-dir", os.path.join(self.work, "agent"), "--log-dir", os.path.join(self.work, "logs"),
             "--listen", f"127.0.0.1:{agent_port}", *flags],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

    def ctr_run(self, pods, parallel):
        """`ctr run -d` of pods containers, at most `parallel` at once: each one's ms."""

        def one(i):
            t = time.monotonic()
            self.ctr("run", "-d", IMAGE, f"c-{i}", "sleep", "3600")
            return (time.monotonic() - t) * 1000

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            ms = list(pool.map(one, range(pods)))
        total = time.monotonic() - start
        ids = [f"c-{i}" for i in range(pods)]
        for i in ids:
            self.ctr("task", "kill", "-s", "SIGKILL", i, check=False)
        for i in ids:
            for _ in range(50):
                if self.ctr("task", "delete", i, check=False).returncode == 0:
                    break
                time.sleep(0.1)
            self.ctr("container", "delete", i, check=False)
        ms.sort()
        return {"pods": pods, "parallel": parallel, "total_secs": total, "running_p50_ms": pct(ms, 0.5),
                "running_p99_ms": pct(ms, 0.99), "running_max_ms": ms[-1]}

    def stop(self):
        for p in (self.agent, self.containerd):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        # Containers the agent left (their shims and processes), then the mounts and the host.
        for pidfile in subprocess.run(["sh", "-c", f"ls {self.dir}/state/io.containerd.runtime.v2.task/*/*/init.pid"
                                       " 2>/dev/null"], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(open(pidfile).read().strip()), 9)
            except (OSError, ValueError):
                pass
        sh(["pkill", "-9", "-f", f"containerd-shim.*-address {self.sock}"])
        time.sleep(0.5)
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
        for m in sorted((m for m in mounts if m.startswith(self.work + "/")), reverse=True):
            sh(["umount", "-l", m])
        try:
            hosts("down")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(RUN, ignore_errors=True)


def wait_node_ready(kubeconfig, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = sh(["kubectl", f"--kubeconfig={kubeconfig}", "get", "node", "bench-node", "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}"])
        if r.returncode == 0 and r.stdout.strip() == "True":
            return
        time.sleep(0.5)
    raise RuntimeError("the agent's node did not become Ready")


def keel_run(keel, kubeconfig, pods, parallel):
    r = sh([keel, "bench", "pod-startup", "--kubeconfig", kubeconfig, "--pods", str(pods), "--parallel",
            str(parallel), "--image", IMAGE, "--json"])
    if r.returncode != 0:
        raise RuntimeError(f"keel bench pod-startup failed: {r.stderr.strip()[-800:]}")
    print(r.stdout.strip().splitlines()[0], flush=True)
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])["result"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 round of 20 pods")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--parallel", default="1,10,100", help="pods starting at once, one phase each")
    ap.add_argument("--keel", default=None, help="the keel binary (default: build a release one)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench-pods.py needs root (containerd, network namespaces)")
    if a.quick:
        a.rounds, a.pods = 1, 20
    parallels = [int(p) for p in a.parallel.split(",")]
    keel = a.keel
    if not keel:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keel"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        keel = os.path.join(target, "release", "keel")
    version = sh(["containerd", "--version"]).stdout.split()[2]
    work = tempfile.mkdtemp(prefix="keel-bench-pods-")
    image_tar = subprocess.run(["bash", os.path.join(ROOT, "deploy", "build-test-images.sh"),
                                os.path.join(work, "images")], check=True, capture_output=True, text=True).stdout.strip()
    base = api.free_base(24000)
    masters = Cluster("keel", keel, base, work, api_ports=[base + i * 10 + 2 for i in range(3)])
    node = Node(keel, work)
    results = []  # (side, parallel, result)
    try:
        masters.start_all()
        kubeconfigs = api.wait_api(masters)
        node.start(kubeconfigs[0], image_tar, base + 50)
        wait_node_ready(kubeconfigs[0])
        load_before = os.getloadavg()[0]
        for r in range(a.rounds):
            for p in parallels:
                sides = ["keel", "ctr"] if r % 2 == 0 else ["ctr", "keel"]
                for side in sides:
                    if side == "keel":
                        res = keel_run(keel, kubeconfigs[1], a.pods, p)
                    else:
                        res = node.ctr_run(a.pods, p)
                        print(f"ctr run: {a.pods} containers, {p} at once, in {res['total_secs']:.2f} s: "
                              f"p50 {res['running_p50_ms']:.0f} ms, p99 {res['running_p99_ms']:.0f} ms", flush=True)
                    results.append((side, p, res))
        load_after = os.getloadavg()[0]
    except Exception:
        print(f"failed; data dirs and logs kept in {work}", flush=True)
        raise
    finally:
        node.stop()
        masters.stop()
    shutil.rmtree(work, ignore_errors=True)
    report(a, parallels, results, version, load_before, load_after)


def report(a, parallels, results, version, load_before, load_after):
    print()
    print(f"## Pod startup: {a.pods} pods on one node, {a.rounds} round(s), containerd {version}, "
          f"load {load_before:.1f}→{load_after:.1f}")
    print()
    print("| at once | side | p50 ms | p99 ms | max ms | all Running after s |")
    print("|---:|---|---:|---:|---:|---:|")
    for p in parallels:
        for side, label in (("keel", "keel: created → Running"), ("ctr", "ctr run -d (anchor)")):
            rs = [r for s, q, r in results if s == side and q == p]
            if not rs:
                continue
            med = lambda k: sorted(r[k] for r in rs)[len(rs) // 2]
            rng = lambda k: f" ({min(r[k] for r in rs):.0f}–{max(r[k] for r in rs):.0f})" if len(rs) > 1 else ""
            print(f"| {p} | {label} | {med('running_p50_ms'):.0f}{rng('running_p50_ms')} | "
                  f"{med('running_p99_ms'):.0f}{rng('running_p99_ms')} | {med('running_max_ms'):.0f} | "
                  f"{med('total_secs'):.2f} |")
    print("\nmedians over the rounds (range in brackets)")


if __name__ == "__main__":
    main()
