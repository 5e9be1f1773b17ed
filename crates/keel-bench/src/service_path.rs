//! `keel bench service-path`: requests through a Service's cluster IP next to the same requests straight
//! to one of its pods, in one run, from inside a network namespace (a pod's, so the traffic takes the path
//! pods' traffic takes). Each request is a new TCP connection (HTTP/1.0 `GET /`, read to the end), so the
//! figures include what the proxy adds per connection: the DNAT's conntrack entry and the rule lookup.
//! The two targets take turns in rounds (ABBA), so that a drift of the machine does not favour either.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One target's figures.
#[derive(Debug, Clone)]
pub struct PathFigures {
    pub target: SocketAddr,
    pub requests: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// Each round's requests per second, in order.
    pub round_rates: Vec<f64>,
}

impl PathFigures {
    fn empty(target: SocketAddr) -> PathFigures {
        PathFigures {
            target,
            requests: 0,
            failures: 0,
            elapsed: Duration::ZERO,
            latencies: vec![],
            round_rates: vec![],
        }
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

fn one_request(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got == 0 {
        return Err(std::io::Error::other("empty answer"));
    }
    // Closed with a reset, so that the server (which closed first) keeps no TIME_WAIT socket: tens of
    // thousands of connections in seconds reuse client ports, and a SYN that meets a TIME_WAIT socket waits
    // out a 1 s retransmission, which then dominates both targets' figures at random.
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// `requests` requests to `target` from `clients` threads inside `netns`.
fn round(netns: &Option<PathBuf>, target: SocketAddr, requests: usize, clients: usize) -> std::io::Result<PathFigures> {
    let started = Instant::now();
    let per_client = requests.div_ceil(clients);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let netns = netns.clone();
        threads.push(std::thread::spawn(move || -> std::io::Result<(Vec<Duration>, usize)> {
            if let Some(ns) = netns {
                keel_proxy::netns::enter(&ns)?;
            }
            let mut latencies = Vec::with_capacity(per_client);
            let mut failures = 0;
            for _ in 0..per_client {
                let t = Instant::now();
                match one_request(target) {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => failures += 1,
                }
            }
            Ok((latencies, failures))
        }));
    }
    let mut figures = PathFigures::empty(target);
    for t in threads {
        let (latencies, failures) = t.join().map_err(|_| std::io::Error::other("a client thread panicked"))??;
        figures.requests += latencies.len();
        figures.failures += failures;
        figures.latencies.extend(latencies);
    }
    figures.elapsed = started.elapsed();
    figures.round_rates.push(figures.per_second());
    Ok(figures)
}

fn merge(into: &mut PathFigures, more: PathFigures) {
    into.requests += more.requests;
    into.failures += more.failures;
    into.elapsed += more.elapsed;
    into.latencies.extend(more.latencies);
    into.round_rates.extend(more.round_rates);
}

/// `rounds` rounds of `requests` to each target in turn.
pub fn run(
    netns: Option<PathBuf>,
    service: SocketAddr,
    direct: SocketAddr,
    requests: usize,
    clients: usize,
    rounds: usize,
) -> std::io::Result<(PathFigures, PathFigures)> {
    let (mut via, mut straight) = (PathFigures::empty(service), PathFigures::empty(direct));
    // A warm-up (ARP, caches); then turns alternate which target goes first (ABBA), so that a drift of the
    // machine within a run weighs on both alike.
    round(&netns, direct, requests.min(200), clients)?;
    for r in 0..rounds.max(1) {
        if r % 2 == 0 {
            merge(&mut via, round(&netns, service, requests, clients)?);
            merge(&mut straight, round(&netns, direct, requests, clients)?);
        } else {
            merge(&mut straight, round(&netns, direct, requests, clients)?);
            merge(&mut via, round(&netns, service, requests, clients)?);
        }
    }
    Ok((via, straight))
}

/// The report's lines.
pub fn report(via: &PathFigures, straight: &PathFigures) -> String {
    let line = |what: &str, f: &PathFigures| {
        format!(
            "{what:<22} {:>21}  {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.1} ms  failures {}\n",
            f.target.to_string(),
            f.per_second(),
            f.percentile(0.5).as_secs_f64() * 1000.0,
            f.percentile(0.99).as_secs_f64() * 1000.0,
            f.percentile(1.0).as_secs_f64() * 1000.0,
            f.failures
        )
    };
    let mut s = line("through the cluster IP", via);
    s += &line("straight to the pod", straight);
    s += &format!(
        "cluster IP / pod: throughput {:.3}, p99 {:.3}\n",
        via.per_second() / straight.per_second().max(1e-9),
        via.percentile(0.99).as_secs_f64() / straight.percentile(0.99).as_secs_f64().max(1e-9)
    );
    // Each round next to its neighbour of the other target: the machine's drift from round to round (here
    // often ±30%) cancels out of these.
    let mut ratios: Vec<f64> =
        via.round_rates.iter().zip(&straight.round_rates).map(|(v, d)| v / d.max(1e-9)).collect();
    ratios.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (ratios.first(), ratios.last()) {
        s += &format!(
            "per round, cluster IP / pod throughput: median {:.3} (min {min:.3}, max {max:.3}, {} rounds); p50 latency {:.3}\n",
            ratios[ratios.len() / 2],
            ratios.len(),
            via.percentile(0.5).as_secs_f64() / straight.percentile(0.5).as_secs_f64().max(1e-9)
        );
    }
    s
}
