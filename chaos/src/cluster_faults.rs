//! The whole-cluster mode's faults (issue 22, item 4): what to break in the launcher's cluster
//! (`deploy/local-cluster.sh`, every master, store member and node a host of its own) and how.
//!
//! [`plan`] is pure: from the fault, the cluster's shape and who leads at that moment it picks the processes
//! or links to hit. [`Procs`] carries the plan out on the processes the launcher recorded under
//! `<cluster dir>/procs/<name>/` (argv, pid, log): kill -9, SIGSTOP/SIGCONT, and starting a process again as
//! it was; partitions are an nftables table of the harness's own in a host's network namespace.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hosts::{run_in, HostError};
use crate::nemesis::load_nft_table;
use crate::traffic::Rng;

/// What the nemesis can do to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterFault {
    /// kill -9 the master that runs the control loops (started again when the fault ends).
    KillControlLeader,
    /// SIGSTOP the master that runs the control loops (SIGCONT when the fault ends).
    PauseControlLeader,
    /// Stop the master that runs the control loops (SIGTERM) and start it again at once.
    RestartControlLeader,
    /// kill -9 the store's Raft leader (a master when stacked, a `keel kv` member when external).
    KillStoreLeader,
    /// SIGSTOP the store's Raft leader.
    PauseStoreLeader,
    /// kill -9 the master node-1's load balancer is using.
    KillAgentMaster,
    /// kill -9 a minority of the masters at once (1 of 3, 2 of 5).
    KillMinority,
    /// Cut one master off from the other masters and the store members.
    PartitionMaster,
    /// Cut one node off from every master.
    PartitionNode,
    /// Cut the control-loop leader off from the store leader (from the other masters when they are one).
    PartitionLeaders,
    /// kill -9 a node's agent and start it again at once.
    RestartAgent,
    /// kill -9 a node's containerd and start it again at once.
    RestartContainerd,
}

impl ClusterFault {
    pub const ALL: [ClusterFault; 12] = [
        ClusterFault::KillControlLeader,
        ClusterFault::PauseControlLeader,
        ClusterFault::RestartControlLeader,
        ClusterFault::KillStoreLeader,
        ClusterFault::PauseStoreLeader,
        ClusterFault::KillAgentMaster,
        ClusterFault::KillMinority,
        ClusterFault::PartitionMaster,
        ClusterFault::PartitionNode,
        ClusterFault::PartitionLeaders,
        ClusterFault::RestartAgent,
        ClusterFault::RestartContainerd,
    ];

    /// Whether only the control plane (masters, store members, links among them) is hit: then no pod may
    /// be disturbed (checker d).
    pub fn control_plane_only(self) -> bool {
        !matches!(self, ClusterFault::PartitionNode | ClusterFault::RestartAgent | ClusterFault::RestartContainerd)
    }
}

/// The cluster's machines, as the launcher lays them out.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// Masters m1..mM: their addresses.
    pub masters: Vec<Ipv4Addr>,
    /// External store members s1..sS (empty when stacked).
    pub stores: Vec<Ipv4Addr>,
    /// Nodes node-1..node-N.
    pub nodes: Vec<Ipv4Addr>,
}

impl Topology {
    /// Host `name`'s network namespace (`khm1`, `khs2`, `kh3`).
    pub fn netns(name: &Host) -> String {
        match name {
            Host::Master(i) => format!("khm{}", i + 1),
            Host::Store(i) => format!("khs{}", i + 1),
            Host::Node(i) => format!("kh{}", i + 1),
        }
    }

    pub fn addr(&self, h: &Host) -> Ipv4Addr {
        match h {
            Host::Master(i) => self.masters[*i],
            Host::Store(i) => self.stores[*i],
            Host::Node(i) => self.nodes[*i],
        }
    }

    /// Whether the store runs inside the masters.
    pub fn stacked(&self) -> bool {
        self.stores.is_empty()
    }
}

/// One machine of the cluster (0-based index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Host {
    Master(usize),
    Store(usize),
    Node(usize),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Master(i) => write!(f, "m{}", i + 1),
            Host::Store(i) => write!(f, "s{}", i + 1),
            Host::Node(i) => write!(f, "node-{}", i + 1),
        }
    }
}

/// A process the launcher started, by the name it recorded it under.
pub fn process_name(h: &Host, what: Program) -> String {
    match (h, what) {
        (Host::Master(i), _) => format!("master-m{}", i + 1),
        (Host::Store(i), _) => format!("store-member-s{}", i + 1),
        (Host::Node(i), Program::Containerd) => format!("containerd-of-node-{}", i + 1),
        (Host::Node(i), _) => format!("agent-of-node-{}", i + 1),
    }
}

/// Which program of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The master or store member (the one program on those hosts), or a node's agent.
    Main,
    Containerd,
}

/// Who leads at the moment a fault is planned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leaders {
    /// The master running the control loops.
    pub control: Option<usize>,
    /// The store's Raft leader (a master when stacked, a store member when not).
    pub store: Option<Host>,
    /// The master node-1's load balancer is connected to.
    pub agent_master: Option<usize>,
}

/// What a fault does, concretely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// kill -9 these processes; start them again when the fault ends.
    Kill(Vec<String>),
    /// SIGSTOP these processes; SIGCONT when the fault ends.
    Pause(Vec<String>),
    /// Stop (SIGTERM, kill -9 after 10 s) and start again at once; the fault's end does nothing more.
    Restart(Vec<String>),
    /// kill -9 and start again at once.
    Crash(Vec<String>),
    /// Drop every packet between the host (namespace) `from` and these addresses, both ways.
    Partition { host: String, netns: String, peers: Vec<Ipv4Addr> },
    /// Nothing to do (the fault's target was not known).
    Skip(String),
}

/// Plans `fault` on `topo` with `leaders` as they were just observed.
pub fn plan(fault: ClusterFault, topo: &Topology, leaders: &Leaders, rng: &mut Rng) -> Action {
    let m = topo.masters.len();
    let master = |i: usize| process_name(&Host::Master(i), Program::Main);
    let random_node = |rng: &mut Rng| rng.below(topo.nodes.len() as u64) as usize;
    let skip = |what: &str| Action::Skip(format!("{fault:?}: {what} not known"));
    match fault {
        ClusterFault::KillControlLeader | ClusterFault::PauseControlLeader | ClusterFault::RestartControlLeader => {
            let Some(c) = leaders.control else { return skip("the control-loop leader") };
            match fault {
                ClusterFault::KillControlLeader => Action::Kill(vec![master(c)]),
                ClusterFault::PauseControlLeader => Action::Pause(vec![master(c)]),
                _ => Action::Restart(vec![master(c)]),
            }
        }
        ClusterFault::KillStoreLeader | ClusterFault::PauseStoreLeader => {
            let Some(s) = leaders.store else { return skip("the store leader") };
            let p = process_name(&s, Program::Main);
            if fault == ClusterFault::KillStoreLeader {
                Action::Kill(vec![p])
            } else {
                Action::Pause(vec![p])
            }
        }
        ClusterFault::KillAgentMaster => match leaders.agent_master {
            Some(a) => Action::Kill(vec![master(a)]),
            None => skip("node-1's master"),
        },
        ClusterFault::KillMinority => {
            let mut all: Vec<usize> = (0..m).collect();
            let mut picked = Vec::new();
            for _ in 0..(m - 1) / 2 {
                picked.push(all.remove(rng.below(all.len() as u64) as usize));
            }
            picked.sort_unstable();
            Action::Kill(picked.into_iter().map(master).collect())
        }
        ClusterFault::PartitionMaster => {
            let i = rng.below(m as u64) as usize;
            partition(topo, Host::Master(i), control_plane_except(topo, Host::Master(i)))
        }
        ClusterFault::PartitionNode => {
            let n = random_node(rng);
            partition(topo, Host::Node(n), (0..m).map(Host::Master).collect())
        }
        ClusterFault::PartitionLeaders => {
            let (Some(c), Some(s)) = (leaders.control, leaders.store) else {
                return skip("the control-loop or the store leader");
            };
            if s == Host::Master(c) {
                // One host leads both: cut it from the rest of the control plane.
                partition(topo, s, control_plane_except(topo, s))
            } else {
                partition(topo, Host::Master(c), vec![s])
            }
        }
        ClusterFault::RestartAgent => Action::Crash(vec![process_name(&Host::Node(random_node(rng)), Program::Main)]),
        ClusterFault::RestartContainerd => {
            Action::Crash(vec![process_name(&Host::Node(random_node(rng)), Program::Containerd)])
        }
    }
}

/// Every master and store member but `h`.
fn control_plane_except(topo: &Topology, h: Host) -> Vec<Host> {
    (0..topo.masters.len())
        .map(Host::Master)
        .chain((0..topo.stores.len()).map(Host::Store))
        .filter(|x| *x != h)
        .collect()
}

fn partition(topo: &Topology, h: Host, peers: Vec<Host>) -> Action {
    Action::Partition {
        host: h.to_string(),
        netns: Topology::netns(&h),
        peers: peers.iter().map(|p| topo.addr(p)).collect(),
    }
}

/// The processes the launcher recorded, and the ones this harness started again.
pub struct Procs {
    dir: PathBuf,
    children: HashMap<String, Child>,
}

impl Procs {
    /// The processes under `<cluster dir>/procs`.
    pub fn new(cluster_dir: &Path) -> Procs {
        Procs { dir: cluster_dir.join("procs"), children: HashMap::new() }
    }

    pub fn pid(&self, name: &str) -> Result<i32, HostError> {
        let f = self.dir.join(name).join("pid");
        let s = std::fs::read_to_string(&f)
            .map_err(|source| HostError::Spawn { command: format!("read {}", f.display()), source })?;
        s.trim().parse().map_err(|_| HostError::Command {
            command: format!("read {}", f.display()),
            stderr: format!("not a pid: {s:?}"),
        })
    }

    fn signal(&self, name: &str, sig: i32) -> Result<i32, HostError> {
        let pid = self.pid(name)?;
        // SAFETY: kill(2) with a pid read from the launcher's record; no memory is involved.
        unsafe { libc::kill(pid, sig) };
        Ok(pid)
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self, name: &str) -> Result<(), HostError> {
        let pid = self.signal(name, libc::SIGKILL)?;
        self.wait_gone(name, pid, Duration::from_secs(10));
        Ok(())
    }

    /// SIGTERM; kill -9 after 10 s.
    pub fn stop(&mut self, name: &str) -> Result<(), HostError> {
        let pid = self.signal(name, libc::SIGTERM)?;
        if !self.wait_gone(name, pid, Duration::from_secs(10)) {
            self.kill(name)?;
        }
        Ok(())
    }

    pub fn pause(&self, name: &str) -> Result<(), HostError> {
        self.signal(name, libc::SIGSTOP).map(drop)
    }

    pub fn resume(&self, name: &str) -> Result<(), HostError> {
        self.signal(name, libc::SIGCONT).map(drop)
    }

    fn wait_gone(&mut self, name: &str, pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            // Our own child: reap it. The launcher's: it was reparented, and is reaped by init once it exits.
            let gone = match self.children.get_mut(name) {
                Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
                // SAFETY: signal 0 only checks that the pid exists.
                None => (unsafe { libc::kill(pid, 0) }) != 0 || is_zombie(pid),
            };
            if gone {
                self.children.remove(name);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `name` again with the argv the launcher recorded, in a session of its own, appending to its
    /// log, and records the new pid where the launcher's `stop` finds it.
    pub fn start(&mut self, name: &str) -> Result<(), HostError> {
        let proc = self.dir.join(name);
        let err = |what: &str, source| HostError::Spawn { command: format!("{what} {}", proc.display()), source };
        let argv = std::fs::read(proc.join("argv")).map_err(|e| err("read argv of", e))?;
        let args: Vec<String> = argv
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let log_path = std::fs::read_to_string(proc.join("log")).map_err(|e| err("read log of", e))?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log_path.trim())
            .map_err(|e| err("open the log of", e))?;
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]).stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| err("log of", e))?).stderr(log);
        // SAFETY: setsid(2) is async-signal-safe; the child gets a session of its own, as the launcher's do.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| err("start", e))?;
        std::fs::write(proc.join("pid"), format!("{}\n", child.id())).map_err(|e| err("write pid of", e))?;
        self.children.insert(name.to_string(), child);
        Ok(())
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The nftables table the cluster mode's partitions live in.
const TABLE: &str = "keelchaos";

/// Carries out the start of `action`.
pub fn inject(action: &Action, procs: &mut Procs) -> Result<(), HostError> {
    match action {
        Action::Kill(v) => v.iter().try_for_each(|p| procs.kill(p)),
        Action::Pause(v) => v.iter().try_for_each(|p| procs.pause(p)),
        Action::Restart(v) => v.iter().try_for_each(|p| procs.stop(p).and_then(|()| procs.start(p))),
        Action::Crash(v) => v.iter().try_for_each(|p| procs.kill(p).and_then(|()| procs.start(p))),
        Action::Partition { netns, peers, .. } => {
            let set = peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            let (input, output) = (format!("ip saddr {{ {set} }} drop;"), format!("ip daddr {{ {set} }} drop;"));
            load_nft_table(netns, TABLE, &input, &output)
        }
        Action::Skip(_) => Ok(()),
    }
}

/// Undoes `action` at the fault's end.
pub fn heal(action: &Action, procs: &mut Procs) -> Result<(), HostError> {
    match action {
        Action::Kill(v) => v.iter().try_for_each(|p| procs.start(p)),
        Action::Pause(v) => v.iter().try_for_each(|p| procs.resume(p)),
        Action::Partition { netns, .. } => {
            let _ = run_in(netns, "nft", &["delete", "table", "inet", TABLE]);
            Ok(())
        }
        Action::Restart(_) | Action::Crash(_) | Action::Skip(_) => Ok(()),
    }
}

/// Removes the cluster mode's partition table from every host (nothing to remove is fine).
pub fn clear_partitions(topo: &Topology) {
    let hosts = (0..topo.masters.len())
        .map(Host::Master)
        .chain((0..topo.stores.len()).map(Host::Store))
        .chain((0..topo.nodes.len()).map(Host::Node));
    for h in hosts {
        let _ = run_in(&Topology::netns(&h), "nft", &["delete", "table", "inet", TABLE]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(masters: usize, stores: usize) -> Topology {
        Topology {
            masters: (0..masters).map(|i| Ipv4Addr::new(10, 200, 0, 101 + i as u8)).collect(),
            stores: (0..stores).map(|i| Ipv4Addr::new(10, 200, 0, 151 + i as u8)).collect(),
            nodes: (0..2).map(|i| Ipv4Addr::new(10, 200, 0, 11 + i as u8)).collect(),
        }
    }

    #[test]
    fn a_minority_is_killed_never_a_majority() {
        for (m, want) in [(3, 1), (5, 2)] {
            for seed in 0..30 {
                let Action::Kill(v) =
                    plan(ClusterFault::KillMinority, &topo(m, 0), &Leaders::default(), &mut Rng::new(seed))
                else {
                    panic!()
                };
                assert_eq!(v.len(), want, "{v:?}");
                let mut d = v.clone();
                d.dedup();
                assert_eq!(d, v);
            }
        }
    }

    #[test]
    fn leader_faults_hit_who_leads_and_skip_when_nobody_is_known() {
        let t = topo(3, 3);
        let leaders = Leaders { control: Some(1), store: Some(Host::Store(2)), agent_master: Some(0) };
        let mut rng = Rng::new(1);
        assert_eq!(
            plan(ClusterFault::KillControlLeader, &t, &leaders, &mut rng),
            Action::Kill(vec!["master-m2".into()])
        );
        assert_eq!(
            plan(ClusterFault::PauseStoreLeader, &t, &leaders, &mut rng),
            Action::Pause(vec!["store-member-s3".into()])
        );
        assert_eq!(plan(ClusterFault::KillAgentMaster, &t, &leaders, &mut rng), Action::Kill(vec!["master-m1".into()]));
        assert_eq!(
            plan(ClusterFault::PartitionLeaders, &t, &leaders, &mut rng),
            Action::Partition { host: "m2".into(), netns: "khm2".into(), peers: vec![Ipv4Addr::new(10, 200, 0, 153)] }
        );
        assert!(matches!(plan(ClusterFault::KillControlLeader, &t, &Leaders::default(), &mut rng), Action::Skip(_)));
    }

    #[test]
    fn partitions_cut_the_right_links() {
        let t = topo(3, 0);
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let Action::Partition { host, peers, .. } =
                plan(ClusterFault::PartitionMaster, &t, &Leaders::default(), &mut rng)
            else {
                panic!()
            };
            // The other two masters, never itself.
            assert_eq!(peers.len(), 2);
            assert!(!peers
                .iter()
                .any(|p| p.to_string() == format!("10.200.0.{}", 100 + host[1..].parse::<u8>().unwrap())));
            let Action::Partition { host, peers, .. } =
                plan(ClusterFault::PartitionNode, &t, &Leaders::default(), &mut rng)
            else {
                panic!()
            };
            assert!(host.starts_with("node-"));
            assert_eq!(peers, t.masters);
        }
        // Stacked, one master leading both: it is cut from the other masters.
        let leaders = Leaders { control: Some(0), store: Some(Host::Master(0)), agent_master: None };
        let Action::Partition { host, peers, .. } =
            plan(ClusterFault::PartitionLeaders, &t, &leaders, &mut Rng::new(3))
        else {
            panic!()
        };
        assert_eq!((host.as_str(), peers), ("m1", vec![t.masters[1], t.masters[2]]));
    }

    #[test]
    fn only_node_faults_may_disturb_pods() {
        let node: Vec<ClusterFault> = ClusterFault::ALL.into_iter().filter(|f| !f.control_plane_only()).collect();
        assert_eq!(node, [ClusterFault::PartitionNode, ClusterFault::RestartAgent, ClusterFault::RestartContainerd]);
    }
}
