//! Where the containers' CPU and memory figures are, and how to read them, for cgroup v2 and v1 alike,
//! as the kubelet's cAdvisor reads them: CPU as cumulative nanoseconds (`cpu.stat` `usage_usec` on v2,
//! `cpuacct.usage` on v1); memory usage (`memory.current` / `memory.usage_in_bytes`) and the working set,
//! usage minus inactive file pages (`memory.stat` `inactive_file` on v2, `total_inactive_file` on v1).
//! The node's own figures come from `/proc/stat` and `/proc/meminfo`. Pure: text in, numbers out; the
//! reads are [`crate::sampler`]'s.

use std::path::PathBuf;

/// Where one controller's hierarchy is mounted, and which version it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    V1(PathBuf),
    V2(PathBuf),
}

/// The hierarchies that hold the CPU accounting and the memory controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub cpu: Option<Hierarchy>,
    pub memory: Option<Hierarchy>,
}

impl Hierarchies {
    /// From `/proc/self/mountinfo`: a v1 hierarchy that has the controller (`cpuacct`, `memory`) wins — on
    /// a hybrid machine the unified hierarchy has no controllers, and runc uses the v1 ones — else the
    /// cgroup2 mount.
    pub fn from_mountinfo(mountinfo: &str) -> Hierarchies {
        let mut v1: Vec<(PathBuf, Vec<&str>)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for line in mountinfo.lines() {
            // `id parent major:minor root mountpoint options [optional…] - fstype source super-options`
            let Some((before, after)) = line.split_once(" - ") else { continue };
            let Some(mountpoint) = before.split(' ').nth(4) else { continue };
            let mut fields = after.split(' ');
            let (fstype, _source, options) = (fields.next(), fields.next(), fields.next().unwrap_or(""));
            let mountpoint = PathBuf::from(unescape(mountpoint));
            match fstype {
                Some("cgroup") => v1.push((mountpoint, options.split(',').collect())),
                Some("cgroup2") if v2.is_none() => v2 = Some(mountpoint),
                _ => {}
            }
        }
        let find = |controller: &str| {
            v1.iter()
                .find(|(_, options)| options.contains(&controller))
                .map(|(p, _)| Hierarchy::V1(p.clone()))
                .or_else(|| v2.clone().map(Hierarchy::V2))
        };
        Hierarchies { cpu: find("cpuacct"), memory: find("memory") }
    }
}

/// mountinfo writes spaces, tabs, newlines and backslashes in paths as octal escapes.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The directory of cgroup `path` (as a container's `cgroupsPath` names it, from the hierarchy's root)
/// in a hierarchy.
pub fn dir(hierarchy: &Hierarchy, path: &str) -> PathBuf {
    let root = match hierarchy {
        Hierarchy::V1(p) | Hierarchy::V2(p) => p,
    };
    root.join(path.trim_start_matches('/'))
}

/// The files the CPU figure of a cgroup is read from, relative to its directory.
pub fn cpu_file(hierarchy: &Hierarchy) -> &'static str {
    match hierarchy {
        Hierarchy::V1(_) => "cpuacct.usage",
        Hierarchy::V2(_) => "cpu.stat",
    }
}

/// The files the memory figures of a cgroup are read from (usage, stat).
pub fn memory_files(hierarchy: &Hierarchy) -> (&'static str, &'static str) {
    match hierarchy {
        Hierarchy::V1(_) => ("memory.usage_in_bytes", "memory.stat"),
        Hierarchy::V2(_) => ("memory.current", "memory.stat"),
    }
}

/// Cumulative CPU time in nanoseconds from the cgroup's CPU file's text.
pub fn cpu_usage(hierarchy: &Hierarchy, text: &str) -> Option<u64> {
    match hierarchy {
        Hierarchy::V1(_) => text.trim().parse().ok(),
        Hierarchy::V2(_) => stat_value(text, "usage_usec").map(|us| us.saturating_mul(1000)),
    }
}

/// Memory of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
}

/// The memory figures from a cgroup's usage file and `memory.stat`.
pub fn memory(hierarchy: &Hierarchy, usage: &str, stat: &str) -> Option<Memory> {
    let usage: u64 = usage.trim().parse().ok()?;
    let inactive = match hierarchy {
        Hierarchy::V1(_) => stat_value(stat, "total_inactive_file"),
        Hierarchy::V2(_) => stat_value(stat, "inactive_file"),
    }
    .unwrap_or(0);
    Some(Memory { usage, working_set: usage.saturating_sub(inactive) })
}

/// The value of `key` in a flat keyed file (`key value` lines: `cpu.stat`, `memory.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The kernel's clock ticks per second in `/proc/stat` (`USER_HZ`: 100 on every Linux architecture's ABI).
const USER_HZ: u64 = 100;

/// The machine's busy CPU time in nanoseconds from `/proc/stat`'s `cpu` line: everything but idle and
/// iowait (guest time is already counted in user time).
pub fn node_cpu_usage(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Some(busy.saturating_mul(1_000_000_000 / USER_HZ))
}

/// The machine's memory from `/proc/meminfo`, in the cgroup figures' terms: usage is what is not free
/// (`MemTotal - MemFree`), the working set that minus `Inactive(file)`.
pub fn node_memory(meminfo: &str) -> Option<Memory> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|v| v * 1024)
        })
    };
    let usage = kib("MemTotal")?.saturating_sub(kib("MemFree")?);
    Some(Memory { usage, working_set: usage.saturating_sub(kib("Inactive(file)").unwrap_or(0)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
33 26 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    const UNIFIED: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn v1_controllers_win_over_the_unified_hierarchy_and_v2_alone_serves_both() {
        let h = Hierarchies::from_mountinfo(HYBRID);
        assert_eq!(h.cpu, Some(Hierarchy::V1("/sys/fs/cgroup/cpu,cpuacct".into())));
        assert_eq!(h.memory, Some(Hierarchy::V1("/sys/fs/cgroup/memory".into())));
        let h = Hierarchies::from_mountinfo(UNIFIED);
        assert_eq!(h.cpu, Some(Hierarchy::V2("/sys/fs/cgroup".into())));
        assert_eq!(h.memory, Some(Hierarchy::V2("/sys/fs/cgroup".into())));
        assert_eq!(Hierarchies::from_mountinfo(""), Hierarchies::default());
        assert_eq!(dir(h.cpu.as_ref().unwrap(), "/keel/n1/k0123-0"), PathBuf::from("/sys/fs/cgroup/keel/n1/k0123-0"));
    }

    #[test]
    fn cpu_from_cpu_stat_and_cpuacct_usage() {
        let v2 = Hierarchy::V2("/sys/fs/cgroup".into());
        let v1 = Hierarchy::V1("/sys/fs/cgroup/cpuacct".into());
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n";
        assert_eq!(cpu_usage(&v2, stat), Some(1_234_567_000));
        assert_eq!(cpu_usage(&v1, "987654321\n"), Some(987_654_321));
        assert_eq!(cpu_usage(&v2, "user_usec 5\n"), None);
        assert_eq!(cpu_usage(&v1, ""), None);
        assert_eq!((cpu_file(&v1), cpu_file(&v2)), ("cpuacct.usage", "cpu.stat"));
    }

    #[test]
    fn the_working_set_is_usage_without_inactive_file_pages() {
        let v2 = Hierarchy::V2("/sys/fs/cgroup".into());
        let stat2 = "anon 1000\nfile 9000\nactive_file 3000\ninactive_file 6000\n";
        assert_eq!(memory(&v2, "10000\n", stat2), Some(Memory { usage: 10000, working_set: 4000 }));
        let v1 = Hierarchy::V1("/sys/fs/cgroup/memory".into());
        // v1's own `inactive_file` counts this cgroup alone; `total_` counts its descendants too.
        let stat1 = "cache 9000\ninactive_file 100\ntotal_cache 9000\ntotal_inactive_file 7000\n";
        assert_eq!(memory(&v1, "10000", stat1), Some(Memory { usage: 10000, working_set: 3000 }));
        // More inactive than used (racy reads) is no working set, not an underflow.
        assert_eq!(memory(&v1, "10", stat1), Some(Memory { usage: 10, working_set: 0 }));
        assert_eq!(memory(&v2, "", stat2), None);
        assert_eq!(memory(&v2, "10", ""), Some(Memory { usage: 10, working_set: 10 }));
    }

    #[test]
    fn the_nodes_figures_from_proc() {
        let stat = "cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 50 10 15 2500 20 2 3 3 0 0\nintr 1 2 3\n";
        // user + nice + system + irq + softirq + steal = 168 ticks of 10 ms.
        assert_eq!(node_cpu_usage(stat), Some(1_680_000_000));
        assert_eq!(node_cpu_usage("intr 1\n"), None);
        let meminfo = "MemTotal:        8000000 kB\nMemFree:         2000000 kB\nMemAvailable:    5000000 kB\n\
                       Active(file):     500000 kB\nInactive(file):  1000000 kB\n";
        assert_eq!(node_memory(meminfo), Some(Memory { usage: 6_000_000 * 1024, working_set: 5_000_000 * 1024 }));
        assert_eq!(node_memory("MemFree: 1 kB\n"), None);
    }
}
