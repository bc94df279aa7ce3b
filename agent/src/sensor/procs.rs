//! What /proc says about processes, the bounded process cache, cgroup ids → paths, and clocks.

use super::event::Process;
use crate::identity::{container_from_cgroup, pod_uid_from_cgroup};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Converts kernel boot-clock nanoseconds into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns.
    offset_ns: i128,
    ticks_per_sec: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let ns = |id| {
            nix::time::clock_gettime(id)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        let boot = ns(nix::time::ClockId::CLOCK_BOOTTIME);
        let real = ns(nix::time::ClockId::CLOCK_REALTIME);
        Clock {
            offset_ns: real - boot,
            ticks_per_sec: procfs::ticks_per_second().max(1),
        }
    }

    pub fn boot_now_ns(&self) -> u64 {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    }

    /// RFC 3339 (UTC, nanoseconds) of a boot-clock time.
    pub fn wall(&self, boot_ns: u64) -> String {
        cairn_protocol::rfc3339::from_unix_ns(self.offset_ns + boot_ns as i128)
            .unwrap_or_else(|| cairn_protocol::rfc3339::format(time::OffsetDateTime::UNIX_EPOCH))
    }

    pub fn now(&self) -> String {
        self.wall(self.boot_now_ns())
    }

    /// `/proc/PID/stat` start time (clock ticks since boot) in boot-clock ns.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1_000_000_000) / self.ticks_per_sec
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Fills the container fields of `p` from a cgroup path (or `/proc/PID/cgroup` lines).
pub fn set_container(p: &mut Process, cgroup_text: &str) {
    for line in cgroup_text.lines() {
        if p.container_id.is_none() {
            if let Some(c) = container_from_cgroup(line) {
                p.container_id = Some(c.id);
                p.container_runtime = Some(c.runtime.to_string());
            }
        }
        if p.pod_uid.is_none() {
            p.pod_uid = pod_uid_from_cgroup(line);
        }
    }
}

/// A process read from `/proc/PID`, with its start time in boot-clock ns.
pub fn read_process(proc_root: &Path, pid: u32, clock: &Clock) -> Option<(Process, Option<u64>)> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close).unwrap_or_default().to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start_ns = rest
        .get(19)
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| clock.ticks_to_ns(t));
    let mut p = Process {
        pid,
        ppid,
        comm,
        ..Default::default()
    };
    if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
        for line in status.lines() {
            let ids = |l: &str| -> Vec<u32> {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect()
            };
            if line.starts_with("Uid:") {
                let v = ids(line);
                p.uid = v.first().copied();
                p.euid = v.get(1).copied();
            } else if line.starts_with("Gid:") {
                p.gid = ids(line).first().copied();
            }
        }
    }
    p.loginuid = std::fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|u| *u != u32::MAX);
    if let Ok(cmd) = std::fs::read(dir.join("cmdline")) {
        let cmd = cmd.strip_suffix(&[0]).unwrap_or(&cmd);
        if !cmd.is_empty() {
            p.args = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
        }
    }
    p.exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|x| x.to_string_lossy().into_owned());
    p.cwd = std::fs::read_link(dir.join("cwd"))
        .ok()
        .map(|x| x.to_string_lossy().into_owned());
    if let Ok(cg) = std::fs::read_to_string(dir.join("cgroup")) {
        p.cgroup = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string);
        set_container(&mut p, &cg);
    }
    p.start_time = start_ns.map(|ns| clock.wall(ns));
    Some((p, start_ns))
}

/// Every numeric entry of /proc.
pub fn list_pids(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct Entry {
    process: Process,
    start_ns: Option<u64>,
    exited: Option<Instant>,
    touched: Instant,
}

/// Processes by pid, seeded from /proc and kept current by events. Bounded: an exited process is
/// forgotten `linger` after its exit, and beyond `max_entries` the oldest entries go first.
pub struct ProcessCache {
    map: HashMap<u32, Entry>,
    max_entries: usize,
    linger: Duration,
    last_sweep: Instant,
}

impl ProcessCache {
    pub fn new(max_entries: usize, linger: Duration) -> ProcessCache {
        ProcessCache {
            map: HashMap::new(),
            max_entries: max_entries.max(16),
            linger,
            last_sweep: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Loads every process of `/proc`.
    pub fn seed(&mut self, proc_root: &Path, clock: &Clock) {
        for pid in list_pids(proc_root) {
            if let Some((p, start)) = read_process(proc_root, pid, clock) {
                self.insert(p, start);
            }
        }
    }

    pub fn insert(&mut self, process: Process, start_ns: Option<u64>) {
        let now = Instant::now();
        self.map.insert(
            process.pid,
            Entry {
                process,
                start_ns,
                exited: None,
                touched: now,
            },
        );
        if self.map.len() > self.max_entries {
            self.shrink();
        }
    }

    /// The cached process `pid`, unless the entry is of an older process with the same pid
    /// (start times differ by more than the /proc tick resolution).
    pub fn get(&self, pid: u32, start_ns: Option<u64>) -> Option<&Process> {
        let e = self.map.get(&pid)?;
        if let (Some(a), Some(b)) = (e.start_ns, start_ns) {
            if a.abs_diff(b) > 20_000_000 {
                return None;
            }
        }
        Some(&e.process)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.map.get_mut(&pid).map(|e| {
            e.touched = Instant::now();
            &mut e.process
        })
    }

    pub fn set_start(&mut self, pid: u32, start_ns: u64) {
        if let Some(e) = self.map.get_mut(&pid) {
            e.start_ns.get_or_insert(start_ns);
        }
    }

    pub fn mark_exited(&mut self, pid: u32) {
        if let Some(e) = self.map.get_mut(&pid) {
            e.exited = Some(Instant::now());
        }
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.map.contains_key(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.map.keys().copied().collect()
    }

    pub fn is_exited(&self, pid: u32) -> bool {
        self.map.get(&pid).is_some_and(|e| e.exited.is_some())
    }

    /// Drops processes that exited more than `linger` ago (at most once a second).
    pub fn sweep(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let linger = self.linger;
        self.map
            .retain(|_, e| e.exited.is_none_or(|t| now.duration_since(t) < linger));
        // After a storm of short-lived processes the table would stay at its largest size.
        if self.map.capacity() > 1024 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// Over the bound: exited entries first, then the least recently touched, down to 90 %.
    fn shrink(&mut self) {
        let target = self.max_entries - self.max_entries / 10;
        let mut order: Vec<(bool, Instant, u32)> = self
            .map
            .iter()
            .map(|(pid, e)| (e.exited.is_none(), e.exited.unwrap_or(e.touched), *pid))
            .collect();
        order.sort_unstable();
        let excess = self.map.len().saturating_sub(target);
        for (_, _, pid) in order.into_iter().take(excess) {
            self.map.remove(&pid);
        }
    }
}

/// cgroup v2 ids (the inode numbers of cgroup directories) → paths, by walking the cgroup2
/// mount; rescanned on a miss, at most every 100 ms.
pub struct CgroupResolver {
    root: Option<PathBuf>,
    ids: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// Ids that a scan did not find, and when.
    misses: HashMap<u64, Instant>,
}

impl CgroupResolver {
    pub fn new() -> CgroupResolver {
        let root = crate::mountinfo::cgroup2_root(Path::new("/proc/self/mountinfo"));
        let mut r = CgroupResolver {
            root,
            ids: HashMap::new(),
            last_scan: None,
            misses: HashMap::new(),
        };
        r.scan();
        r
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        if self.ids.len() > 100_000 {
            self.ids.clear();
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(md) = std::fs::metadata(&dir) {
                let rel = dir.strip_prefix(&root).unwrap_or(&dir);
                self.ids
                    .insert(md.ino(), format!("/{}", rel.to_string_lossy()));
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }

    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.ids.get(&id) {
            return Some(p.clone());
        }
        // An unknown id is usually a cgroup created since the last scan (a container that
        // just started): rescan for it, but at most once a second per id, so ids that never
        // resolve cannot turn an exec storm into a scan storm.
        let retry = self
            .misses
            .get(&id)
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if retry {
            self.scan();
            if self.misses.len() > 10_000 {
                self.misses.clear();
            }
            self.misses.insert(id, Instant::now());
        }
        self.ids.get(&id).cloned()
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        CgroupResolver::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_from_proc() {
        let clock = Clock::new();
        let (p, start) = read_process(Path::new("/proc"), std::process::id(), &clock).unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(start.is_some());
        assert!(!p.args.is_empty());
    }

    #[test]
    fn cache_is_bounded_and_forgets_exited_processes_first() {
        let mut c = ProcessCache::new(100, Duration::from_secs(3600));
        for pid in 1..=100 {
            c.insert(
                Process {
                    pid,
                    ..Default::default()
                },
                None,
            );
        }
        c.mark_exited(5);
        c.insert(
            Process {
                pid: 1000,
                ..Default::default()
            },
            None,
        );
        assert!(c.len() <= 100);
        assert!(!c.contains(5));
        assert!(c.contains(1000));
    }

    #[test]
    fn pid_reuse_is_not_confused_with_the_cached_process() {
        let mut c = ProcessCache::new(100, Duration::from_secs(1));
        c.insert(
            Process {
                pid: 9,
                ..Default::default()
            },
            Some(1_000_000_000),
        );
        assert!(c.get(9, Some(1_005_000_000)).is_some());
        assert!(c.get(9, Some(9_000_000_000)).is_none());
    }
}
