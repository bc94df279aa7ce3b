//! The sensor's events, as serialised to JSON (documented in `docs/events.md`).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ProcessExec,
    ProcessFork,
    ProcessExit,
    TcpConnect,
    TcpAccept,
    TcpClose,
    SecurityCall,
    /// Records that could not be delivered: see [`Lost`].
    EventsLost,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProcessExec => "process_exec",
            EventKind::ProcessFork => "process_fork",
            EventKind::ProcessExit => "process_exit",
            EventKind::TcpConnect => "tcp_connect",
            EventKind::TcpAccept => "tcp_accept",
            EventKind::TcpClose => "tcp_close",
            EventKind::SecurityCall => "security_call",
            EventKind::EventsLost => "events_lost",
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A kernel tracepoint.
    Ebpf,
    /// Polling /proc (the fallback): short-lived processes can be missed, exit codes are unknown.
    Procfs,
}

/// A process, as the kernel reported it and the process cache completed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Process id (thread group id).
    pub pid: u32,
    /// The thread that caused the event (equals `pid` for the main thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub ppid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The name of `uid` in the host's `/etc/passwd`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    /// Audit login uid (`None` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    pub comm: String,
    /// The executable: the path given to execve (made absolute with `cwd` when relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// argv.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

/// A TCP socket's 5-tuple (protocol is always tcp here). `s*` is local, `d*` remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socket {
    /// `inet` or `inet6`.
    pub family: String,
    pub protocol: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    /// connect: the syscall's return value (0, or a negative errno such as -115 EINPROGRESS);
    /// accept: the new file descriptor. Absent for close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// close: the TCP state the socket left (`ESTABLISHED`, `LAST_ACK`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_state: Option<String>,
    /// The kernel socket, hashed: pairs a connect or accept with its close.
    pub cookie: String,
}

/// A security-relevant system call, at entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syscall {
    pub name: String,
    /// The raw arguments (up to four).
    pub args: Vec<u64>,
    /// A string argument where the call has one (memfd name, module parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// ptrace: the request's name (`PTRACE_ATTACH`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit status (0–255), when the process exited by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
}

impl Exit {
    /// From the kernel's `task->exit_code` (`(status << 8) | signal | 0x80 if core`).
    pub fn from_kernel(code: i32) -> Exit {
        let sig = code & 0x7f;
        Exit {
            code: (sig == 0).then_some((code >> 8) & 0xff),
            signal: (sig != 0).then_some(sig),
            core_dumped: code & 0x80 != 0,
        }
    }
}

/// An explicit gap: `count` records of `kind` were lost (ring buffer full or a slow consumer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// The kind of the lost records (`process_exec`, …), or `subscriber` for a slow consumer.
    pub kind: String,
    /// Lost since the previous `events_lost` of this kind.
    pub count: u64,
    /// Lost since the sensor started.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub kind: EventKind,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<Socket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<Syscall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<Lost>,
}

impl Event {
    pub fn new(time: String, kind: EventKind, source: Source) -> Event {
        Event {
            time,
            kind,
            source,
            process: None,
            parent: None,
            socket: None,
            syscall: None,
            exit: None,
            lost: None,
        }
    }

    /// One line for a person at the console.
    pub fn line(&self) -> String {
        let mut s = String::new();
        let t = self.time.get(11..23).unwrap_or(&self.time);
        let _ = write!(s, "{t} {:<14}", self.kind.as_str());
        if let Some(p) = &self.process {
            let _ = write!(s, " {:>7} {:<15}", p.pid, p.comm);
            if let Some(u) = p.uid {
                let _ = write!(s, " uid={u}");
            }
        }
        match self.kind {
            EventKind::ProcessExec => {
                if let Some(p) = &self.process {
                    let _ = write!(s, " ppid={}", p.ppid);
                    if let Some(c) = &p.container_id {
                        let _ = write!(s, " ctr={}", c.get(..12).unwrap_or(c));
                    }
                    let _ = write!(s, " {}", shell_words(&p.args));
                    if p.args_truncated {
                        s.push('…');
                    }
                }
            }
            EventKind::ProcessFork => {
                if let Some(p) = &self.parent {
                    let _ = write!(s, " parent={} ({})", p.pid, p.comm);
                }
            }
            EventKind::ProcessExit => {
                if let Some(e) = &self.exit {
                    match (e.code, e.signal) {
                        (Some(c), _) => {
                            let _ = write!(s, " code={c}");
                        }
                        (None, Some(sig)) => {
                            let _ = write!(s, " signal={sig}");
                        }
                        _ => s.push_str(" code=?"),
                    }
                }
            }
            EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpClose => {
                if let Some(k) = &self.socket {
                    let _ = write!(
                        s,
                        " {}:{} -> {}:{}",
                        bracket(&k.saddr),
                        k.sport,
                        bracket(&k.daddr),
                        k.dport
                    );
                    if let Some(r) = k.result {
                        let _ = write!(s, " result={r}");
                    }
                    if let Some(o) = &k.old_state {
                        let _ = write!(s, " from={o}");
                    }
                }
            }
            EventKind::SecurityCall => {
                if let Some(c) = &self.syscall {
                    let _ = write!(s, " {}", c.name);
                    if let Some(d) = &c.detail {
                        let _ = write!(s, " {d}");
                    }
                    if let Some(t) = &c.text {
                        let _ = write!(s, " {t:?}");
                    }
                    let _ = write!(s, " args={:?}", c.args);
                }
            }
            EventKind::EventsLost => {
                if let Some(l) = &self.lost {
                    let _ = write!(s, " {} lost: {} (total {})", l.kind, l.count, l.total);
                }
            }
        }
        if self.source == Source::Procfs {
            s.push_str(" [procfs]");
        }
        s
    }
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decode_like_wait_status() {
        assert_eq!(Exit::from_kernel(3 << 8).code, Some(3));
        let killed = Exit::from_kernel(9);
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        assert!(Exit::from_kernel(11 | 0x80).core_dumped);
    }

    #[test]
    fn json_names_are_stable() {
        let mut e = Event::new(
            "2026-01-01T00:00:00.000000001Z".into(),
            EventKind::ProcessExec,
            Source::Ebpf,
        );
        e.process = Some(Process {
            pid: 7,
            args: vec!["/bin/true".into(), "b c".into()],
            ..Default::default()
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "process_exec");
        assert_eq!(v["source"], "ebpf");
        assert_eq!(v["process"]["args"][1], "b c");
        assert!(e.line().contains("/bin/true 'b c'"));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
