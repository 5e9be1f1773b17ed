//! `keel bench proxy-rules`: how long the node's Service proxy takes to get a change into the kernel, with
//! S Services of E endpoints each, in a network namespace of its own (as root, with nft and
//! iptables-restore): one whole programming of the table, then C changes of one endpoint each, every one
//! timed from the new model to the transaction applied (rules computed, `nft -f` run).
//!
//! The anchor, side by side in the same run and namespace: the same Services as kube-proxy's iptables
//! mode lays them out (KUBE-SERVICES → KUBE-SVC-* with `statistic` probabilities → KUBE-SEP-* DNAT),
//! restored whole with `iptables-restore`, and each change as kube-proxy ≥ 1.26 writes it (only the
//! changed Service's chains, `--noflush`). kube-proxy's nftables mode is not packaged for Debian, and its
//! announcement publishes no programming-time figure, so it is not measured here.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_proxy::model::{Endpoint, Protocol, ServicePort};
use keel_proxy::nft::{Nft, Nftables};
use keel_proxy::rules::{self, Mode, NodeNetwork, Ruleset};

#[derive(Debug, thiserror::Error)]
pub enum ProxyBenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Proxy(#[from] keel_proxy::ProxyError),
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), ProxyBenchError> {
    if ok {
        Ok(())
    } else {
        Err(ProxyBenchError::Setup(why()))
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ProxyRulesReport {
    pub services: usize,
    pub endpoints: usize,
    /// Rules and map elements in keel's table.
    pub keel_size: usize,
    pub keel_full: Duration,
    pub keel_changes: Vec<Duration>,
    /// Of each change, the part spent in `nft -f`.
    pub keel_nft: Vec<Duration>,
    /// The periodic resync (every chain and map refilled, `Mode::Refresh`), a few times.
    pub keel_resyncs: Vec<Duration>,
    /// Lines in the iptables-mode ruleset.
    pub iptables_lines: usize,
    pub iptables_full: Duration,
    pub iptables_changes: Vec<Duration>,
}

fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 20)) + i as u32)
}

fn endpoint_ip(i: usize, j: usize, generation: usize) -> Ipv4Addr {
    // Distinct per (service, endpoint, generation) within 10.244.0.0/14.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + ((generation * 1_000_003 + i * 64 + j) as u32 % (1 << 18)))
}

fn model(services: usize, endpoints: usize) -> Vec<ServicePort> {
    (0..services)
        .map(|i| {
            let eps: Vec<Endpoint> =
                (0..endpoints).map(|j| Endpoint { ip: endpoint_ip(i, j, 0), port: 8080, local: j == 0 }).collect();
            ServicePort {
                namespace: "bench".into(),
                service: format!("svc-{i}"),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                cluster_ips: vec![service_ip(i)],
                node_port: None,
                external_ips: vec![],
                affinity_seconds: None,
                internal: eps.clone(),
                external: eps,
                external_local: false,
            }
        })
        .collect()
}

/// kube-proxy's iptables layout for service `i` of `ports`: its KUBE-SVC and KUBE-SEP chains (declared and
/// filled), and its KUBE-SERVICES rule.
fn iptables_service(i: usize, port: &ServicePort) -> (Vec<String>, Vec<String>, String) {
    let svc = format!("KUBE-SVC-{i:012}");
    let mut chains = vec![format!(":{svc} - [0:0]")];
    let mut rules = Vec::new();
    let n = port.internal.len();
    for (k, e) in port.internal.iter().enumerate() {
        let sep = format!("KUBE-SEP-{i:06}{k:06}");
        chains.push(format!(":{sep} - [0:0]"));
        let probability = if k + 1 == n {
            String::new()
        } else {
            format!("-m statistic --mode random --probability {:.10} ", 1.0 / (n - k) as f64)
        };
        rules.push(format!("-A {svc} -m comment --comment \"{}\" {probability}-j {sep}", port.id()));
        rules.push(format!("-A {sep} -s {}/32 -j KUBE-MARK-MASQ", e.ip));
        rules.push(format!("-A {sep} -p tcp -m tcp -j DNAT --to-destination {}:{}", e.ip, e.port));
    }
    let top = format!("-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {} -j {svc}", port.cluster_ips[0], port.port);
    (chains, rules, top)
}

fn iptables_full(ports: &[ServicePort]) -> String {
    let mut chains = vec![":KUBE-SERVICES - [0:0]".to_string(), ":KUBE-MARK-MASQ - [0:0]".to_string()];
    let mut rules = vec!["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".to_string()];
    let mut tops = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let (c, r, t) = iptables_service(i, p);
        chains.extend(c);
        rules.extend(r);
        tops.push(t);
    }
    format!("*nat\n{}\n{}\n{}\nCOMMIT\n", chains.join("\n"), tops.join("\n"), rules.join("\n"))
}

/// kube-proxy's partial restore for a change to service `i`: its chains flushed (a declaration in a
/// `--noflush` restore flushes the chain) and refilled, everything else untouched. (Endpoint chains are
/// named by position here, so the replaced endpoint's chain is reused, not deleted.)
fn iptables_change(i: usize, port: &ServicePort) -> String {
    let (chains, rules, _) = iptables_service(i, port);
    format!("*nat\n{}\n{}\nCOMMIT\n", chains.join("\n"), rules.join("\n"))
}

fn run_in(netns: &str, program: &str, args: &[&str], input: &str) -> Result<(), ProxyBenchError> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().map(|mut s| s.write_all(input.as_bytes())).transpose()?;
    let out = child.wait_with_output()?;
    ensure(out.status.success(), || format!("{program}: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(())
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs the benchmark: `services` × `endpoints`, then `changes` changes.
pub fn run(services: usize, endpoints: usize, changes: usize) -> Result<ProxyRulesReport, ProxyBenchError> {
    ensure(services > 0 && endpoints > 1 && changes > 0, || "need services > 0, endpoints > 1, changes > 0".into())?;
    let netns = Netns(format!("keel-bench-proxy-{}", std::process::id()));
    let ok = Command::new("ip").args(["netns", "add", &netns.0]).status()?.success();
    ensure(ok, || format!("ip netns add {} failed (run as root)", netns.0))?;
    let net = NodeNetwork { cluster_cidr: "10.244.0.0/14".parse().ok(), pod_cidr: "10.244.0.0/24".parse().ok() };
    let nft = Nft { netns: Some(format!("/run/netns/{}", netns.0).into()) };
    nft.check()?;

    // keel: the whole table, then one endpoint replaced per change.
    let mut ports = model(services, endpoints);
    let started = Instant::now();
    let mut applied = rules::ruleset(&ports, &net);
    nft.apply(&rules::script(&applied, &Ruleset::default(), Mode::Replace))?;
    let keel_full = started.elapsed();
    let keel_size = applied.size();
    let mut keel_changes = Vec::new();
    let mut keel_nft = Vec::new();
    for c in 0..changes {
        let i = (c * 7919) % services;
        ports[i].internal[c % endpoints] =
            Endpoint { ip: endpoint_ip(i, c % endpoints, c + 1), port: 8080, local: false };
        ports[i].external = ports[i].internal.clone();
        let started = Instant::now();
        let desired = rules::ruleset(&ports, &net);
        let script = rules::script(&desired, &applied, Mode::Update);
        let applying = Instant::now();
        nft.apply(&script)?;
        keel_nft.push(applying.elapsed());
        keel_changes.push(started.elapsed());
        applied = desired;
    }
    // The periodic resync: the same table computed again and every chain and map refilled.
    let mut keel_resyncs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let desired = rules::ruleset(&ports, &net);
        nft.apply(&rules::script(&desired, &applied, Mode::Refresh))?;
        keel_resyncs.push(started.elapsed());
        applied = desired;
    }

    // The anchor: kube-proxy's iptables layout, in the same namespace.
    let mut ports = model(services, endpoints);
    let full = iptables_full(&ports);
    let iptables_lines = full.lines().count();
    let started = Instant::now();
    run_in(&netns.0, "iptables-restore", &[], &full)?;
    let iptables_full_time = started.elapsed();
    let mut iptables_changes = Vec::new();
    for c in 0..changes {
        let i = (c * 7919) % services;
        let k = c % endpoints;
        ports[i].internal[k] = Endpoint { ip: endpoint_ip(i, k, c + 1), port: 8080, local: false };
        let script = iptables_change(i, &ports[i]);
        let started = Instant::now();
        run_in(&netns.0, "iptables-restore", &["--noflush"], &script)?;
        iptables_changes.push(started.elapsed());
    }
    Ok(ProxyRulesReport {
        services,
        endpoints,
        keel_size,
        keel_full,
        keel_changes,
        keel_nft,
        keel_resyncs,
        iptables_lines,
        iptables_full: iptables_full_time,
        iptables_changes,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl std::fmt::Display for ProxyRulesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let line = |f: &mut std::fmt::Formatter<'_>, what: &str, full: Duration, changes: &[Duration]| {
            let mut sorted = changes.to_vec();
            sorted.sort();
            writeln!(
                f,
                "{what:<34} full {:>8.1} ms   change p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                ms(full),
                ms(percentile(&sorted, 0.5)),
                ms(percentile(&sorted, 0.99)),
                ms(*sorted.last().unwrap_or(&Duration::ZERO))
            )
        };
        writeln!(
            f,
            "{} Services x {} endpoints, {} changes of one endpoint",
            self.services,
            self.endpoints,
            self.keel_changes.len()
        )?;
        line(f, &format!("keel (nft, {} rules+elements)", self.keel_size), self.keel_full, &self.keel_changes)?;
        line(f, "  of which nft -f", Duration::ZERO, &self.keel_nft)?;
        line(f, "  periodic resync (every chain)", Duration::ZERO, &self.keel_resyncs)?;
        line(f, &format!("iptables layout ({} lines)", self.iptables_lines), self.iptables_full, &self.iptables_changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_lays_services_out_as_kube_proxy_does() {
        let ports = model(2, 3);
        let full = iptables_full(&ports);
        assert!(full.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"));
        assert!(full.contains("-A KUBE-SERVICES -d 10.96.0.21/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-000000000001"));
        assert!(full.contains("--probability 0.3333333333 -j KUBE-SEP-000000000000"));
        assert!(full.contains("--probability 0.5000000000 -j KUBE-SEP-000000000001"));
        assert!(full.contains(
            "-A KUBE-SVC-000000000000 -m comment --comment \"bench/svc-0/tcp/http\" -j KUBE-SEP-000000000002"
        ));
        assert_eq!(full.matches("DNAT").count(), 6);
        assert_ne!(endpoint_ip(0, 0, 0), endpoint_ip(0, 0, 1));
    }
}
