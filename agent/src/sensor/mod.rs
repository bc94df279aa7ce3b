//! The host sensor: process and TCP activity from eBPF tracepoints, or from polling /proc where
//! BPF cannot load.
//!
//! - [`ebpf`]: loads `cairn-ebpf`'s object with aya (ring buffer sized from the configuration),
//!   attaches the tracepoints and reads the per-kind drop counters.
//! - [`decode`]: ring buffer records → raw structs, by offset (`ebpf/bpf/events.h`).
//! - [`enrich`]: raw records → [`Event`]s, with the [`procs::ProcessCache`] (seeded from /proc,
//!   bounded) for lineage, exe and argv, and cgroup → container id / pod uid.
//! - [`event`]: the JSON event format (`docs/events.md`).
//!
//! Losses are never silent: drops in the kernel (ring buffer full) and in userspace (a
//! subscriber too slow) are counted per kind ([`Sensor::lost`]) and delivered as
//! `events_lost` events.

pub mod decode;
pub mod ebpf;
pub mod enrich;
pub mod event;
pub mod procs;
pub mod users;

pub use event::{Event, EventKind, Exit, Lost, Process, Socket, Source, Syscall};

use enrich::Enricher;
use procs::{list_pids, read_process, ProcessCache};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the sensor may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorMode {
    /// eBPF, or /proc polling where BPF cannot load.
    #[default]
    Auto,
    /// eBPF only: failing to load is an error.
    Ebpf,
    /// /proc polling only.
    Procfs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SensorConfig {
    pub mode: SensorMode,
    /// Size of the kernel ring buffer, rounded up to a power of two (at least one page).
    pub ring_buffer_bytes: u64,
    /// Most processes kept in the process cache.
    pub max_processes: usize,
    /// How long an exited process stays in the cache, so that its late events (a socket
    /// closed as its file table is torn down, records still in the ring buffer) find it. The
    /// ring buffer is read within a fraction of a second; longer only costs memory in an exec
    /// storm (about 1 KB per process).
    pub exited_linger_secs: u64,
    /// Fallback sensor: interval between two reads of /proc.
    pub procfs_poll_ms: u64,
    /// Events buffered per subscriber before it is counted as lost.
    pub subscriber_capacity: usize,
    pub proc_root: PathBuf,
    /// Only processes in this cgroup (a path under the cgroup v2 root, `/cairn/web-7`) and
    /// its descendants: the host is that subtree. For several agents on one machine, each
    /// standing for a host (a fleet simulated on loopback, a VM per slice); unset: every
    /// process of the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_scope: Option<String>,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            mode: SensorMode::Auto,
            ring_buffer_bytes: 4 * 1024 * 1024,
            max_processes: 65_536,
            exited_linger_secs: 5,
            procfs_poll_ms: 100,
            subscriber_capacity: 16_384,
            proc_root: PathBuf::from("/proc"),
            cgroup_scope: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunningMode {
    Ebpf,
    Procfs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensorStatus {
    pub mode: RunningMode,
    /// Why the sensor runs in this mode (the BPF error, for the fallback).
    pub reason: Option<String>,
    /// Bytes of the kernel ring buffer (eBPF mode).
    pub ring_buffer_bytes: Option<u32>,
    /// `category/name` of every attached tracepoint.
    pub tracepoints: Vec<String>,
    /// Optional tracepoints that could not be attached, with the reason.
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("eBPF sensor unavailable: {0} (run as root on a kernel with BTF; `cargo xtask setup` mounts tracefs)")]
    Ebpf(String),
    #[error("cannot start the sensor thread: {0}")]
    Thread(#[from] std::io::Error),
}

struct Subscriber {
    tx: SyncSender<Box<Event>>,
    /// Not delivered since the last `events_lost` it received.
    pending_lost: u64,
    total_lost: u64,
}

/// Fan-out to subscribers, with per-subscriber loss accounting.
#[derive(Default)]
struct Hub {
    subs: Mutex<Vec<Subscriber>>,
    lost: Mutex<BTreeMap<String, u64>>,
    /// [`SensorConfig::cgroup_scope`], without its trailing `/`.
    scope: Option<String>,
}

/// Whether an event concerns a process in `scope` (a cgroup path) or below it. A process
/// whose cgroup is unknown is outside: a scoped sensor reports only what it can place.
/// Losses are always in scope: they may be anyone's.
fn in_scope(ev: &Event, scope: &str) -> bool {
    if ev.kind == EventKind::EventsLost {
        return true;
    }
    let Some(cg) = ev.process.as_ref().and_then(|p| p.cgroup.as_deref()) else {
        return false;
    };
    cg.strip_prefix(scope)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Hub {
    fn send(&self, ev: &Event, clock_now: &dyn Fn() -> String) {
        if let Some(scope) = &self.scope {
            if !in_scope(ev, scope) {
                return;
            }
        }
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        let mut newly_lost = 0;
        subs.retain_mut(|s| {
            if s.pending_lost > 0 {
                let mut l = Event::new(clock_now(), EventKind::EventsLost, ev.source);
                l.lost = Some(Lost {
                    kind: "subscriber".into(),
                    count: s.pending_lost,
                    total: s.total_lost,
                });
                match s.tx.try_send(Box::new(l)) {
                    Ok(()) => s.pending_lost = 0,
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            if s.pending_lost > 0 {
                s.pending_lost += 1;
                s.total_lost += 1;
                newly_lost += 1;
                return true;
            }
            match s.tx.try_send(Box::new(ev.clone())) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.pending_lost += 1;
                    s.total_lost += 1;
                    newly_lost += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        drop(subs);
        if newly_lost > 0 {
            self.add_lost("subscriber", newly_lost);
        }
    }

    fn add_lost(&self, kind: &str, n: u64) {
        if let Ok(mut l) = self.lost.lock() {
            *l.entry(kind.to_string()).or_default() += n;
        }
    }

    fn set_lost(&self, kind: &str, total: u64) {
        if let Ok(mut l) = self.lost.lock() {
            l.insert(kind.to_string(), total);
        }
    }
}

/// A subscriber's end. Events travel boxed: the channel's slots are allocated up front, and
/// 65,536 slots of a whole `Event` would be ~60 MB of resident memory for an idle agent.
pub struct Subscription(Receiver<Box<Event>>);

impl Subscription {
    pub fn recv(&self) -> Result<Event, std::sync::mpsc::RecvError> {
        self.0.recv().map(|b| *b)
    }

    pub fn recv_timeout(&self, d: Duration) -> Result<Event, std::sync::mpsc::RecvTimeoutError> {
        self.0.recv_timeout(d).map(|b| *b)
    }

    pub fn try_recv(&self) -> Result<Event, std::sync::mpsc::TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }
}

/// A running sensor; dropping it stops it (and detaches the BPF programs).
pub struct Sensor {
    status: SensorStatus,
    hub: Arc<Hub>,
    capacity: usize,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Sensor {
    /// Loads and attaches (or falls back to /proc polling, in `Auto` mode) and starts the
    /// thread that reads, enriches and delivers events. Events from the moment this returns
    /// are delivered to subscribers that subscribe before they are read.
    pub fn start(cfg: SensorConfig) -> Result<Sensor, SensorError> {
        let hub = Arc::new(Hub {
            scope: cfg
                .cgroup_scope
                .as_deref()
                .map(|s| s.trim_end_matches('/').to_string()),
            ..Hub::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let cache = ProcessCache::new(
            cfg.max_processes,
            Duration::from_secs(cfg.exited_linger_secs),
        );
        let mut enricher = Enricher::new(cache, cfg.proc_root.clone());

        let loaded = match cfg.mode {
            SensorMode::Procfs => Err("configured to poll /proc (mode = procfs)".to_string()),
            _ => ebpf::load(&cfg),
        };
        // Seeded after attaching (what starts meanwhile waits in the ring buffer) and before
        // returning, so that every process older than the sensor has its lineage.
        enricher.seed();
        tracing::debug!(
            "sensor: process cache seeded with {} entries",
            enricher.cache.len()
        );
        let (status, worker) = match loaded {
            Ok(l) => {
                let status = SensorStatus {
                    mode: RunningMode::Ebpf,
                    reason: None,
                    ring_buffer_bytes: Some(ebpf::ring_size(cfg.ring_buffer_bytes)),
                    tracepoints: l.attached.clone(),
                    missing: l.missing.clone(),
                };
                tracing::info!(
                    "sensor: eBPF, {} tracepoints, ring buffer {} bytes",
                    l.attached.len(),
                    ebpf::ring_size(cfg.ring_buffer_bytes)
                );
                let (h, s) = (hub.clone(), stop.clone());
                let worker = std::thread::Builder::new()
                    .name("sensor-ebpf".into())
                    .spawn(move || ebpf_loop(l, &mut enricher, &h, &s))?;
                (status, worker)
            }
            Err(reason) => {
                if cfg.mode == SensorMode::Ebpf {
                    return Err(SensorError::Ebpf(reason));
                }
                if cfg.mode == SensorMode::Auto {
                    tracing::warn!(
                        "sensor: eBPF unavailable ({reason}); falling back to polling /proc \
                         every {} ms: short-lived processes may be missed, exit codes are unknown",
                        cfg.procfs_poll_ms
                    );
                }
                let status = SensorStatus {
                    mode: RunningMode::Procfs,
                    reason: Some(reason),
                    ring_buffer_bytes: None,
                    tracepoints: Vec::new(),
                    missing: Vec::new(),
                };
                let (h, s) = (hub.clone(), stop.clone());
                let interval = Duration::from_millis(cfg.procfs_poll_ms.max(10));
                let alive: HashSet<u32> = list_pids(&cfg.proc_root).into_iter().collect();
                let worker = std::thread::Builder::new()
                    .name("sensor-procfs".into())
                    .spawn(move || procfs_loop(&mut enricher, alive, interval, &h, &s))?;
                (status, worker)
            }
        };
        Ok(Sensor {
            status,
            hub,
            capacity: cfg.subscriber_capacity.max(16),
            stop,
            worker: Some(worker),
        })
    }

    /// A new receiver of every event from now on.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = sync_channel(self.capacity);
        if let Ok(mut s) = self.hub.subs.lock() {
            s.push(Subscriber {
                tx,
                pending_lost: 0,
                total_lost: 0,
            });
        }
        Subscription(rx)
    }

    pub fn status(&self) -> &SensorStatus {
        &self.status
    }

    /// Records lost so far, by kind (`process_exec`, …, `subscriber`, `decode_error`).
    pub fn lost(&self) -> BTreeMap<String, u64> {
        self.hub.lost.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops the worker and detaches the programs.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn kind_name(k: u32) -> &'static str {
    match k {
        cairn_ebpf::kind::EXEC => "process_exec",
        cairn_ebpf::kind::FORK => "process_fork",
        cairn_ebpf::kind::EXIT => "process_exit",
        cairn_ebpf::kind::CONNECT => "tcp_connect",
        cairn_ebpf::kind::ACCEPT => "tcp_accept",
        cairn_ebpf::kind::CLOSE => "tcp_close",
        cairn_ebpf::kind::SECURITY => "security_call",
        _ => "unknown",
    }
}

fn ebpf_loop(mut l: ebpf::Loaded, en: &mut Enricher, hub: &Hub, stop: &AtomicBool) {
    let clock = en.clock;
    let now = move || clock.now();
    let mut seen_drops: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_check = Instant::now();
    let mut decode_errors = 0u64;
    let check_drops = |l: &ebpf::Loaded, seen: &mut BTreeMap<u32, u64>| {
        for (k, total) in l.drops() {
            let before = seen.get(&k).copied().unwrap_or(0);
            if total > before {
                seen.insert(k, total);
                let name = kind_name(k);
                hub.set_lost(name, total);
                tracing::warn!(
                    "sensor: {} {name} records lost (ring buffer full)",
                    total - before
                );
                let mut e = Event::new(now(), EventKind::EventsLost, Source::Ebpf);
                e.lost = Some(Lost {
                    kind: name.into(),
                    count: total - before,
                    total,
                });
                hub.send(&e, &now);
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        l.wait(Duration::from_millis(100));
        let mut n = 0u32;
        loop {
            let decoded = match l.ring.next() {
                Some(item) => decode::decode(&item),
                None => break,
            };
            match decoded {
                Ok(raw) => {
                    // Two threads leaving at once can both see the thread group empty in the
                    // kernel (the exit check reads `signal->live`, not its own decrement):
                    // the process's exit is reported once.
                    if en.repeated_exit(&raw) {
                        continue;
                    }
                    let ev = en.event(raw);
                    hub.send(&ev, &now);
                }
                Err(e) => {
                    decode_errors += 1;
                    hub.set_lost("decode_error", decode_errors);
                    if decode_errors < 10 {
                        tracing::warn!("sensor: undecodable record: {e}");
                    }
                }
            }
            // Under a flood, still look at the drop counters now and then.
            n += 1;
            if n >= 4096 {
                if last_check.elapsed() > Duration::from_millis(500) {
                    break;
                }
                n = 0;
            }
        }
        if last_check.elapsed() > Duration::from_millis(250) {
            last_check = Instant::now();
            check_drops(&l, &mut seen_drops);
            en.cache.sweep();
        }
    }
    // Whatever was dropped up to the end is reported too.
    check_drops(&l, &mut seen_drops);
}

/// `alive` is the pid set taken before `Sensor::start` returned: a process started after that
/// must be reported even if this thread is scheduled late.
fn procfs_loop(
    en: &mut Enricher,
    mut alive: HashSet<u32>,
    interval: Duration,
    hub: &Hub,
    stop: &AtomicBool,
) {
    let clock = en.clock;
    let now = move || clock.now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        let current: HashSet<u32> = list_pids(&en.proc_root).into_iter().collect();
        for pid in current.difference(&alive) {
            if let Some((p, start)) = read_process(&en.proc_root, *pid, &en.clock) {
                en.cache.insert(p.clone(), start);
                let ev = en.polled(EventKind::ProcessExec, p);
                hub.send(&ev, &now);
            }
        }
        for pid in alive.difference(&current) {
            let p = en.cache.get(*pid, None).cloned().unwrap_or(Process {
                pid: *pid,
                ..Default::default()
            });
            en.cache.mark_exited(*pid);
            let ev = en.polled(EventKind::ProcessExit, p);
            hub.send(&ev, &now);
        }
        alive = current;
        en.cache.sweep();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn exec_in(cgroup: Option<&str>) -> Event {
        let mut e = Event::new("t".into(), EventKind::ProcessExec, Source::Ebpf);
        e.process = Some(Process {
            cgroup: cgroup.map(str::to_string),
            ..Process::default()
        });
        e
    }

    #[test]
    fn a_scoped_sensor_keeps_its_subtree_and_nothing_beside_it() {
        let scope = "/cairn/web-7";
        assert!(in_scope(&exec_in(Some("/cairn/web-7")), scope));
        assert!(in_scope(&exec_in(Some("/cairn/web-7/job")), scope));
        // A sibling whose name only starts the same is not inside.
        assert!(!in_scope(&exec_in(Some("/cairn/web-70")), scope));
        assert!(!in_scope(&exec_in(Some("/system.slice")), scope));
        assert!(!in_scope(&exec_in(None), scope));
        let lost = Event::new("t".into(), EventKind::EventsLost, Source::Ebpf);
        assert!(in_scope(&lost, scope));
    }

    #[test]
    fn the_hub_drops_what_is_out_of_scope_without_counting_it_lost() {
        let hub = Hub {
            scope: Some("/cairn/a".into()),
            ..Hub::default()
        };
        let (tx, rx) = sync_channel(8);
        hub.subs.lock().unwrap().push(Subscriber {
            tx,
            pending_lost: 0,
            total_lost: 0,
        });
        let now = || "t".to_string();
        hub.send(&exec_in(Some("/cairn/b")), &now);
        hub.send(&exec_in(Some("/cairn/a/x")), &now);
        let got = rx.try_recv().unwrap();
        assert_eq!(got.process.unwrap().cgroup.as_deref(), Some("/cairn/a/x"));
        assert!(rx.try_recv().is_err());
        assert!(hub.lost.lock().unwrap().is_empty());
    }
}
