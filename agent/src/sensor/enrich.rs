//! Raw kernel records → [`Event`]s: process cache lookups (lineage, exe, argv), container ids
//! from cgroups, addresses and names.

use super::decode::{
    RawBody, RawEvent, RawSocket, RawTask, FLAG_ARGS_TRUNCATED, FLAG_CWD_TRUNCATED,
};
use super::event::{Event, EventKind, Exit, Process, Socket, Source, Syscall};
use super::procs::{read_process, set_container, CgroupResolver, Clock, ProcessCache};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub struct Enricher {
    pub cache: ProcessCache,
    pub clock: Clock,
    pub proc_root: PathBuf,
    cgroups: CgroupResolver,
    /// cgroup id → (path, container id, runtime, pod uid)
    cgroup_info: HashMap<u64, Process>,
    cookie_key: std::collections::hash_map::RandomState,
    users: super::users::Users,
}

impl Enricher {
    pub fn new(cache: ProcessCache, proc_root: PathBuf) -> Enricher {
        // The host's passwd beside its /proc (`/host/proc` → `/host/etc/passwd` in a pod).
        let passwd = proc_root
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join("etc/passwd");
        Enricher {
            cache,
            clock: Clock::new(),
            proc_root,
            cgroups: CgroupResolver::new(),
            cgroup_info: HashMap::new(),
            cookie_key: Default::default(),
            users: super::users::Users::new(passwd),
        }
    }

    pub fn seed(&mut self) {
        let root = self.proc_root.clone();
        self.cache.seed(&root, &self.clock);
    }

    /// The cached process (or, on a miss, what /proc says while it is still there).
    fn lookup(&mut self, pid: u32, start_ns: Option<u64>) -> Option<Process> {
        if pid == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(pid, start_ns) {
            return Some(p.clone());
        }
        let (p, start) = read_process(&self.proc_root, pid, &self.clock)?;
        if let (Some(a), Some(b)) = (start, start_ns) {
            if a.abs_diff(b) > 20_000_000 {
                return None; // a newer process with the same pid
            }
        }
        self.cache.insert(p.clone(), start.or(start_ns));
        Some(p)
    }

    fn apply_cgroup(&mut self, p: &mut Process, cgroup_id: u64) {
        if cgroup_id == 0 || (p.cgroup_id == Some(cgroup_id) && p.cgroup.is_some()) {
            p.cgroup_id = Some(cgroup_id).filter(|c| *c != 0).or(p.cgroup_id);
            return;
        }
        p.cgroup_id = Some(cgroup_id);
        // The process moved (or is new): what the cache knew of its old cgroup is stale.
        p.cgroup = None;
        p.container_id = None;
        p.container_runtime = None;
        p.pod_uid = None;
        if !self.cgroup_info.contains_key(&cgroup_id) {
            let Some(path) = self.cgroups.resolve(cgroup_id) else {
                return;
            };
            let mut info = Process {
                cgroup: Some(path.clone()),
                ..Default::default()
            };
            set_container(&mut info, &path);
            if self.cgroup_info.len() > 50_000 {
                self.cgroup_info.clear();
            }
            self.cgroup_info.insert(cgroup_id, info);
        }
        if let Some(info) = self.cgroup_info.get(&cgroup_id) {
            p.cgroup = info.cgroup.clone();
            p.container_id = info.container_id.clone();
            p.container_runtime = info.container_runtime.clone();
            p.pod_uid = info.pod_uid.clone();
        }
    }

    /// The process a kernel record names, completed from the cache.
    fn process(&mut self, t: &RawTask) -> Process {
        let mut p = self
            .lookup(t.tgid, Some(t.start_boottime_ns))
            .unwrap_or_default();
        p.pid = t.tgid;
        p.tid = Some(t.pid);
        p.ppid = t.ppid;
        p.uid = Some(t.uid);
        p.user = self.users.name(t.uid);
        p.gid = Some(t.gid);
        p.euid = Some(t.euid);
        p.loginuid = Some(t.loginuid).filter(|u| *u != u32::MAX);
        if !t.comm.is_empty() {
            p.comm = t.comm.clone();
        }
        if t.start_boottime_ns != 0 {
            p.start_time = Some(self.clock.wall(t.start_boottime_ns));
            self.cache.set_start(t.tgid, t.start_boottime_ns);
        }
        self.apply_cgroup(&mut p, t.cgroup_id);
        p
    }

    fn parent(&mut self, ppid: u32) -> Option<Process> {
        self.lookup(ppid, None)
    }

    fn remember(&mut self, p: &Process, start_ns: u64) {
        let mut c = p.clone();
        c.tid = None;
        let start = (start_ns != 0).then_some(start_ns);
        // An exec under the pid of an exited process is a new process (pid reuse): its own
        // exit must not look like a repeat.
        let reused = self.cache.is_exited(p.pid);
        match self.cache.get_mut(p.pid) {
            Some(slot) if !reused => *slot = c,
            _ => self.cache.insert(c, start),
        }
        if let Some(s) = start {
            self.cache.set_start(p.pid, s);
        }
    }

    /// An exit of a process whose exit was already reported (and not followed by a new
    /// process with that pid).
    pub fn repeated_exit(&self, raw: &RawEvent) -> bool {
        matches!(raw.body, RawBody::Exit { .. }) && self.cache.is_exited(raw.hdr.task.tgid)
    }

    pub fn event(&mut self, raw: RawEvent) -> Event {
        let time = self.clock.wall(raw.hdr.ts_boot_ns);
        let t = &raw.hdr.task;
        match raw.body {
            RawBody::Exec {
                filename,
                cwd_components,
                args,
                ..
            } => {
                let mut p = self.process(t);
                let mut cwd = if cwd_components.is_empty() {
                    "/".to_string()
                } else {
                    let mut s = String::new();
                    for c in cwd_components.iter().rev() {
                        s.push('/');
                        s.push_str(c);
                    }
                    s
                };
                if raw.hdr.flags & FLAG_CWD_TRUNCATED != 0 {
                    // Deeper than the kernel side walks: ask /proc while the process lives.
                    match std::fs::read_link(self.proc_root.join(format!("{}/cwd", t.tgid))) {
                        Ok(c) => cwd = c.to_string_lossy().into_owned(),
                        Err(_) => cwd = format!("…{cwd}"),
                    }
                }
                p.exe = Some(if filename.starts_with('/') || filename.is_empty() {
                    filename
                } else {
                    format!("{}/{}", cwd.trim_end_matches('/'), filename)
                });
                p.args = args;
                p.args_truncated = raw.hdr.flags & FLAG_ARGS_TRUNCATED != 0;
                p.cwd = Some(cwd);
                self.remember(&p, t.start_boottime_ns);
                let mut e = Event::new(time, EventKind::ProcessExec, Source::Ebpf);
                e.parent = self.parent(p.ppid);
                e.process = Some(p);
                e
            }
            RawBody::Fork { child_pid } => {
                let parent = self.process(t);
                let mut child = parent.clone();
                child.pid = child_pid;
                child.tid = None;
                child.ppid = parent.pid;
                child.start_time = None;
                self.cache.insert(child.clone(), None);
                let mut e = Event::new(time, EventKind::ProcessFork, Source::Ebpf);
                e.process = Some(child);
                e.parent = Some(parent);
                e
            }
            RawBody::Exit { exit_code } => {
                let p = self.process(t);
                self.cache.mark_exited(p.pid);
                let mut e = Event::new(time, EventKind::ProcessExit, Source::Ebpf);
                e.exit = Some(Exit::from_kernel(exit_code));
                e.parent = self.parent(p.ppid);
                e.process = Some(p);
                e
            }
            RawBody::Connect(s) | RawBody::Accept(s) | RawBody::Close(s) => {
                let kind = match raw.hdr.kind {
                    cairn_ebpf::kind::CONNECT => EventKind::TcpConnect,
                    cairn_ebpf::kind::ACCEPT => EventKind::TcpAccept,
                    _ => EventKind::TcpClose,
                };
                let p = self.process(t);
                let mut e = Event::new(time, kind, Source::Ebpf);
                e.socket = Some(self.socket(&s, kind));
                e.process = Some(p);
                e
            }
            RawBody::Security {
                syscall,
                args,
                text,
            } => {
                let p = self.process(t);
                let (name, arity) = syscall_name(syscall);
                let mut e = Event::new(time, EventKind::SecurityCall, Source::Ebpf);
                e.syscall = Some(Syscall {
                    name: name.into(),
                    args: args.iter().take(arity).copied().collect(),
                    text: Some(text).filter(|s| !s.is_empty()),
                    detail: match syscall {
                        1 => Some(ptrace_request(args[0])),
                        13 => Some("BPF_PROG_LOAD".into()),
                        _ => None,
                    },
                });
                e.process = Some(p);
                e
            }
        }
    }

    fn socket(&self, s: &RawSocket, kind: EventKind) -> Socket {
        let addr = |a: &[u8; 16]| -> String {
            if s.family == 2 {
                Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
            } else {
                Ipv6Addr::from(*a).to_string()
            }
        };
        Socket {
            family: if s.family == 2 { "inet" } else { "inet6" }.into(),
            protocol: "tcp".into(),
            saddr: addr(&s.saddr),
            sport: s.sport,
            daddr: addr(&s.daddr),
            dport: s.dport,
            result: (kind != EventKind::TcpClose).then_some(s.result),
            old_state: (kind == EventKind::TcpClose).then(|| tcp_state(s.result).into()),
            cookie: format!("{:016x}", self.cookie_key.hash_one(s.sock_id)),
        }
    }

    /// An exec or exit seen by polling /proc.
    pub fn polled(&mut self, kind: EventKind, p: Process) -> Event {
        let mut e = Event::new(self.clock.now(), kind, Source::Procfs);
        e.parent = self.parent(p.ppid);
        e.process = Some(p);
        e
    }
}

fn tcp_state(s: i64) -> &'static str {
    match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// (name, number of arguments) of `enum cairn_syscall`.
fn syscall_name(n: u32) -> (&'static str, usize) {
    use cairn_ebpf::layout::syscall as sc;
    match n {
        sc::PTRACE => ("ptrace", 4),
        sc::SETUID => ("setuid", 1),
        sc::SETGID => ("setgid", 1),
        sc::SETREUID => ("setreuid", 2),
        sc::SETREGID => ("setregid", 2),
        sc::SETRESUID => ("setresuid", 3),
        sc::SETRESGID => ("setresgid", 3),
        sc::SETFSUID => ("setfsuid", 1),
        sc::SETFSGID => ("setfsgid", 1),
        sc::MEMFD_CREATE => ("memfd_create", 2),
        sc::INIT_MODULE => ("init_module", 3),
        sc::FINIT_MODULE => ("finit_module", 3),
        sc::BPF_PROG_LOAD => ("bpf", 3),
        _ => ("unknown", 4),
    }
}

fn ptrace_request(r: u64) -> String {
    let name = match r {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        _ => return format!("PTRACE_{r:#x}"),
    };
    name.into()
}
