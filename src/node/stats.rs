//! Resource usage of the node and its containers, as the kubelet's resource metrics report it (what metrics-server
//! turns into `metrics.k8s.io`, and `kubectl top` shows): CPU as a rate in nanocores over the last sampling window
//! and memory as the working set in bytes. A sampler reads the cumulative CPU time every few seconds - of a
//! container's cgroup when the runtime gives it one (containerd), else of the container's process tree in `/proc`
//! (the process runtime) - and of the whole machine from `/proc/stat`; the agent's `/stats` endpoint serves the
//! latest rates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::pod::PodState;
use super::Shared;

/// How often usage is sampled (metrics-server scrapes every 15 s; kubectl top shows the last window).
pub const EVERY: Duration = Duration::from_secs(5);

/// One reading of cumulative CPU time (ns) and current memory (bytes).
#[derive(Clone, Copy, Debug)]
struct Reading {
    cpu_ns: u64,
    at: Instant,
}

/// A rate between two readings.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_nano_cores: u64,
    pub memory_working_set_bytes: u64,
    /// When the later reading was taken (RFC 3339).
    pub timestamp: String,
    /// The window the rate is over, in seconds.
    pub window_seconds: f64,
}

/// A container's usage.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// A pod's containers' usage.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerUsage>,
}

/// What `/stats` answers.
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct Summary {
    pub node: Option<Usage>,
    pub pods: Vec<PodUsage>,
}

/// The latest readings and rates.
#[derive(Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, Reading>>,
    summary: Mutex<Summary>,
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The parent pid and CPU ticks (own + reaped children) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks: u64 = [11, 12, 13, 14]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    Some((ppid, ticks))
}

fn rss_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

/// The machine's processes: pid -> (parent pid, CPU ticks), read once per sampling round (not once per container:
/// with a hundred containers, reading all of /proc for each cost a tenth of a core).
pub struct ProcessTable(HashMap<i32, (i32, u64)>);

impl ProcessTable {
    pub fn read() -> ProcessTable {
        let mut parents = HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(s) = proc_stat(pid) {
                parents.insert(pid, s);
            }
        }
        ProcessTable(parents)
    }
}

/// CPU time and memory of the process tree under `root` (the process runtime's containers).
pub fn process_tree(root: i32) -> Option<(u64, u64)> {
    process_tree_in(&ProcessTable::read(), root)
}

/// [`process_tree`] from a table already read.
pub fn process_tree_in(table: &ProcessTable, root: i32) -> Option<(u64, u64)> {
    let parents = &table.0;
    parents.get(&root)?;
    let in_tree = |mut pid: i32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some((ppid, _)) if *ppid > 0 => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    let ns_per_tick = 1_000_000_000 / ticks_per_second();
    let (mut cpu, mut mem) = (0u64, 0u64);
    for (pid, (_, ticks)) in parents {
        if in_tree(*pid) {
            cpu += ticks * ns_per_tick;
            mem += rss_bytes(*pid);
        }
    }
    Some((cpu, mem))
}

/// CPU time and working set of a cgroup (v2) directory (the containerd runtime's containers).
pub fn cgroup(dir: &Path) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    let current: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The working set leaves out inactive file pages, as the kubelet computes it.
    let inactive = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("inactive_file "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Some((usec * 1000, current.saturating_sub(inactive)))
}

/// The machine's CPU time (all cores, not idle) and memory in use, from `/proc/stat` and `/proc/meminfo`.
pub fn machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| cpu.get(*i)).sum();
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    let used = field("MemTotal:")?.saturating_sub(field("MemAvailable:")?);
    Some((busy * (1_000_000_000 / ticks_per_second()), used))
}

impl Sampler {
    /// Takes a reading of `key` and returns the rate since the previous one (None on the first).
    fn rate(
        &self,
        key: &str,
        (cpu_ns, memory): (u64, u64),
        seen: &mut Vec<String>,
    ) -> Option<Usage> {
        seen.push(key.to_string());
        let now = Reading {
            cpu_ns,
            at: Instant::now(),
        };
        let prev = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), now)?;
        let window = now.at.duration_since(prev.at).as_secs_f64();
        if window <= 0.0 {
            return None;
        }
        let used = now.cpu_ns.saturating_sub(prev.cpu_ns) as f64;
        Some(Usage {
            cpu_nano_cores: (used / window) as u64,
            memory_working_set_bytes: memory,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            window_seconds: (window * 10.0).round() / 10.0,
        })
    }

    /// One round: the machine and every running container of the node's pods.
    pub async fn sample(&self, shared: &Shared) {
        let mut seen = Vec::new();
        let node = machine().and_then(|r| self.rate("node", r, &mut seen));
        let mut pods = Vec::new();
        let mut table: Option<ProcessTable> = None;
        let dirs: Vec<PathBuf> = std::fs::read_dir(&shared.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        for dir in dirs {
            let Some(state) = PodState::load(&dir) else {
                continue;
            };
            let mut containers = Vec::new();
            for (name, saved) in &state.containers {
                let Some(running) = &saved.running else {
                    continue;
                };
                if !shared.runtime.alive(&running.handle).await {
                    continue;
                }
                let reading = match shared.runtime.cgroup(&running.handle) {
                    Some(dir) => cgroup(&dir),
                    None => process_tree_in(
                        table.get_or_insert_with(ProcessTable::read),
                        running.handle.pid,
                    ),
                };
                let key = format!(
                    "{}/{}/{name}/{}",
                    state.namespace, state.name, running.handle.pid
                );
                if let Some(usage) = reading.and_then(|r| self.rate(&key, r, &mut seen)) {
                    containers.push(ContainerUsage {
                        name: name.clone(),
                        usage,
                    });
                }
            }
            if !containers.is_empty() {
                pods.push(PodUsage {
                    namespace: state.namespace.clone(),
                    name: state.name.clone(),
                    containers,
                });
            }
        }
        // Readings of containers gone are forgotten.
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| seen.contains(k));
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Summary { node, pods };
    }

    /// The latest usage.
    pub fn summary(&self) -> Summary {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Samples every [`EVERY`] for as long as the agent runs.
    pub async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        loop {
            self.sample(&shared).await;
            tokio::time::sleep(EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_tree_shows_cpu_and_memory() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let sampler = Sampler::default();
        let mut seen = Vec::new();
        assert!(sampler
            .rate("x", process_tree(pid).unwrap(), &mut seen)
            .is_none());
        std::thread::sleep(Duration::from_millis(500));
        let usage = sampler
            .rate("x", process_tree(pid).unwrap(), &mut seen)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(usage.cpu_nano_cores > 200_000_000, "{usage:?}");
        assert!(usage.memory_working_set_bytes > 0);
        let (cpu, mem) = machine().unwrap();
        assert!(cpu > 0 && mem > 0);
    }
}
