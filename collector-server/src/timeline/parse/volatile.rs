//! Volatile snapshots and the event journal item: process start times from `processes.json`,
//! sockets from `network.json` and loaded kernel modules and pinned BPF objects from
//! `kernel.json` (both dated by the snapshot's `collected_at`), and the sensor events a
//! collection carries in `events.jsonl`.

use super::{Line, Lines, MAX_DOCUMENT, MAX_LINE};
use crate::timeline::{dedup_key, Emit, Event, Stop};
use serde_json::Value;
use std::io::{BufRead, Read};

/// The snapshot's JSON (read whole, at most [`MAX_DOCUMENT`] bytes), or `None` with the whole
/// item kept as one unparsed event.
fn document(
    r: impl BufRead,
    mtime_ns: i64,
    name: &'static str,
    out: &mut impl Emit,
) -> Result<Option<Value>, Stop> {
    let mut data = Vec::new();
    r.take(MAX_DOCUMENT + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_DOCUMENT {
        return Err(Stop::TooLarge {
            what: name,
            max: MAX_DOCUMENT,
        });
    }
    match serde_json::from_slice(&data) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            out.unparsed(mtime_ns, name, 0, name, &format!("not JSON: {e}"))?;
            Ok(None)
        }
    }
}

/// `processes.json` → one `process_start` per process with a start time (kernel threads left
/// out: they start at boot and say nothing about an intrusion).
pub fn processes(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let Some(doc) = document(r, mtime_ns, "processes.json", out)? else {
        return Ok(());
    };
    for (n, p) in doc["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if p["kernel_thread"].as_bool() == Some(true) {
            continue;
        }
        let Some(t) = p["start_time"]
            .as_str()
            .and_then(cairn_protocol::rfc3339::parse_ns)
        else {
            if !p["vanished"].as_bool().unwrap_or(false) {
                let pid = p["pid"].to_string();
                let why = "process without start_time";
                out.unparsed(mtime_ns, "processes.json", n as u64, &pid, why)?;
            }
            continue;
        };
        let argv: Vec<String> = p["cmdline"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let exe = p["exe"].as_str().map(str::to_string);
        let shown = if argv.is_empty() {
            exe.clone()
                .or_else(|| p["comm"].as_str().map(|c| format!("[{c}]")))
                .unwrap_or_default()
        } else {
            argv.join(" ")
        };
        let mut e = Event::new(
            t,
            "processes.json",
            "process_start",
            format!("process {} started: {shown}", p["pid"]),
        );
        e.pid = p["pid"].as_i64();
        e.ppid = p["ppid"].as_i64();
        e.exe = exe;
        e.argv = (!argv.is_empty()).then_some(argv);
        e.user = p["uid"]["real"].as_u64().map(|u| u.to_string());
        e.container = p["container_id"].as_str().map(str::to_string);
        e.pod = p["pod_uid"].as_str().map(str::to_string);
        for k in ["comm", "cwd", "exe_sha256", "exe_deleted"] {
            if !p[k].is_null() {
                e.attrs.insert(k.to_string(), p[k].clone());
            }
        }
        e.dedup = dedup_key(&[
            b"process_start",
            p["pid"].to_string().as_bytes(),
            p["start_time"].to_string().as_bytes(),
        ]);
        out.event(e)?;
    }
    Ok(())
}

/// `network.json` → the sockets seen at the snapshot: connections and listeners.
pub fn network(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let Some(doc) = document(r, mtime_ns, "network.json", out)? else {
        return Ok(());
    };
    let collected = doc["collected_at"]
        .as_str()
        .and_then(cairn_protocol::rfc3339::parse_ns);
    let t = collected.unwrap_or(mtime_ns);
    let owner = |s: &Value| -> (Option<i64>, String) {
        let o = s["owners"].as_array().and_then(|o| o.first());
        (
            o.and_then(|o| o["pid"].as_i64()),
            o.map(|o| format!("{} (pid {})", o["comm"].as_str().unwrap_or("?"), o["pid"]))
                .unwrap_or_else(|| "unknown owner".into()),
        )
    };
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        for s in doc[proto].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (pid, who) = owner(s);
            let state = s["state"].as_str().unwrap_or("?");
            let kind = if state == "LISTEN" {
                "socket_listen"
            } else {
                "socket_snapshot"
            };
            let msg = format!(
                "{proto} {}:{} -> {}:{} {state} {who}",
                s["local_address"].as_str().unwrap_or("?"),
                s["local_port"],
                s["remote_address"].as_str().unwrap_or("?"),
                s["remote_port"]
            );
            let mut e = Event::new(t, "network.json", kind, msg)
                .attr("protocol", proto)
                .attr("state", state);
            for k in [
                "local_address",
                "local_port",
                "remote_address",
                "remote_port",
                "inode",
                "owners",
            ] {
                e.attrs.insert(k.to_string(), s[k].clone());
            }
            e.pid = pid;
            e.user = s["uid"].as_u64().map(|u| u.to_string());
            // A listener is found by where connections to it go (`dst_port:22
            // kind:socket_listen`), a connection by its remote end.
            let (addr, port) = if state == "LISTEN" {
                ("local_address", "local_port")
            } else {
                ("remote_address", "remote_port")
            };
            e.dst_addr = s[addr].as_str().map(str::to_string);
            e.dst_port = s[port].as_i64();
            e.dedup = dedup_key(&[
                b"socket",
                &t.to_le_bytes(),
                proto.as_bytes(),
                s["inode"].to_string().as_bytes(),
                s["local_port"].to_string().as_bytes(),
                s["remote_address"].to_string().as_bytes(),
                s["remote_port"].to_string().as_bytes(),
            ]);
            if collected.is_none() {
                e = e.inferred("file_mtime");
            }
            out.event(e)?;
        }
    }
    Ok(())
}

/// `events.jsonl` (the flight recorder's window): sensor events, keyed like the live stream,
/// one line at a time.
pub fn event_journal(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let mut last = mtime_ns;
    let mut lines = Lines::new(r, MAX_LINE);
    while let Some((at, line)) = lines.next_line()? {
        let line = match line {
            Line::Text(b) => String::from_utf8_lossy(b),
            Line::TooLong { head, len, .. } => {
                let text = String::from_utf8_lossy(head);
                let why = Line::too_long(len, MAX_LINE);
                out.unparsed(last, "event_journal", at, &text, &why)?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match super::ebpf::from_line(&line) {
            Some(e) => {
                last = e.time_ns;
                out.event(e)?;
            }
            None => out.unparsed(last, "event_journal", at, &line, "not a sensor event")?,
        }
    }
    Ok(())
}

/// `kernel.json` → one `kernel_module` per loaded module and one `bpf_pinned` per pinned BPF
/// object, at the snapshot's time. Their messages are what a host's profile compares
/// (`kernel module nf_tables`), so they carry the name and kind, and nothing host-specific.
pub fn kernel(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let Some(doc) = document(r, mtime_ns, "kernel.json", out)? else {
        return Ok(());
    };
    let t = doc["collected_at"]
        .as_str()
        .and_then(cairn_protocol::rfc3339::parse_ns)
        .unwrap_or(mtime_ns);
    let list = |k: &str| doc[k].as_array().map(Vec::as_slice).unwrap_or_default();
    for (n, m) in list("modules").iter().enumerate() {
        let Some(name) = m["name"].as_str().filter(|s| !s.is_empty()) else {
            out.unparsed(
                mtime_ns,
                "kernel.json",
                n as u64,
                &m.to_string(),
                "module without a name",
            )?;
            continue;
        };
        let mut e = Event::new(
            t,
            "kernel.json",
            "kernel_module",
            format!("kernel module {name}"),
        );
        for k in ["size", "state", "taint", "deps", "address"] {
            if !m[k].is_null() {
                e.attrs.insert(k.to_string(), m[k].clone());
            }
        }
        e.dedup = dedup_key(&[b"kernel_module", &t.to_le_bytes(), name.as_bytes()]);
        out.event(e)?;
    }
    for (n, b) in list("bpf_pinned").iter().enumerate() {
        let Some(path) = b["path"].as_str().filter(|s| !s.is_empty()) else {
            out.unparsed(
                mtime_ns,
                "kernel.json",
                n as u64,
                &b.to_string(),
                "BPF object without a path",
            )?;
            continue;
        };
        let kind = b["kind"].as_str().unwrap_or("unknown");
        if kind == "directory" {
            continue;
        }
        let prog_type = b["fdinfo"]["prog_type"]
            .as_str()
            .map(|p| format!(" ({p})"))
            .or_else(|| {
                b["fdinfo"]["prog_type"]
                    .as_i64()
                    .map(|p| format!(" (type {p})"))
            })
            .unwrap_or_default();
        let mut e = Event::new(
            t,
            "kernel.json",
            "bpf_pinned",
            format!("pinned bpf {kind} {path}{prog_type}"),
        );
        e.path = Some(path.to_string());
        for k in ["kind", "fdinfo", "error"] {
            if !b[k].is_null() {
                e.attrs.insert(k.to_string(), b[k].clone());
            }
        }
        e.dedup = dedup_key(&[b"bpf_pinned", &t.to_le_bytes(), path.as_bytes()]);
        out.event(e)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn run(f: fn(&[u8], i64, &mut Parsed) -> Result<(), Stop>, data: &[u8], t: i64) -> Parsed {
        let mut p = Parsed::default();
        f(data, t, &mut p).unwrap();
        p
    }

    fn processes(data: &[u8], t: i64) -> Parsed {
        run(|d, t, p| super::processes(d, t, p), data, t)
    }

    fn network(data: &[u8], t: i64) -> Parsed {
        run(|d, t, p| super::network(d, t, p), data, t)
    }

    #[test]
    fn process_starts_and_sockets() {
        let procs = br#"{"boot_time_unix":1795900000,"processes":[
            {"pid":1,"ppid":0,"comm":"systemd","kernel_thread":false,"vanished":false,"uid":{"real":0},"start_time":"2026-11-28T21:00:01Z","cmdline":["/sbin/init"],"exe":"/usr/lib/systemd/systemd"},
            {"pid":2,"ppid":0,"comm":"kthreadd","kernel_thread":true,"uid":{"real":0},"start_time":"2026-11-28T21:00:01Z","cmdline":[]},
            {"pid":4242,"ppid":1,"comm":"xmrig","kernel_thread":false,"vanished":false,"uid":{"real":1000},"start_time":"2026-11-29T09:59:00.5Z","cmdline":["./xmrig","-o","pool:3333"],"exe":"/tmp/.x/xmrig","container_id":"abc"}],
            "collected_at":"2026-11-29T10:05:00Z","errors":[]}"#;
        let p = processes(procs, 0);
        assert_eq!(p.events.len(), 2);
        let x = &p.events[1];
        assert_eq!(x.kind, "process_start");
        assert_eq!(
            x.time_ns,
            cairn_protocol::rfc3339::parse_ns("2026-11-29T09:59:00.5Z").unwrap()
        );
        assert_eq!(x.user.as_deref(), Some("1000"));
        assert_eq!(x.container.as_deref(), Some("abc"));
        assert_eq!(x.message, "process 4242 started: ./xmrig -o pool:3333");
        let net = br#"{"collected_at":"2026-11-29T10:05:00Z","tcp":[{"local_address":"10.0.1.17","local_port":41000,"remote_address":"198.51.100.20","remote_port":3333,"state":"ESTABLISHED","uid":1000,"inode":99,"owners":[{"pid":4242,"comm":"xmrig","fd":5}]}],
            "tcp6":[{"local_address":"::","local_port":22,"remote_address":"::","remote_port":0,"state":"LISTEN","inode":7,"owners":[]}],"errors":[]}"#;
        let n = network(net, 0);
        assert_eq!(n.events.len(), 2);
        assert_eq!(n.events[0].kind, "socket_snapshot");
        assert_eq!(n.events[0].pid, Some(4242));
        assert!(n.events[0]
            .message
            .contains("198.51.100.20:3333 ESTABLISHED xmrig (pid 4242)"));
        assert_eq!(n.events[1].kind, "socket_listen");
        // A connection is found by its remote end, a listener by where it listens.
        assert_eq!(n.events[0].dst_addr.as_deref(), Some("198.51.100.20"));
        assert_eq!(n.events[0].dst_port, Some(3333));
        assert_eq!(n.events[1].dst_addr.as_deref(), Some("::"));
        assert_eq!(n.events[1].dst_port, Some(22));
        assert_eq!(processes(b"{not json", 5).unparsed, 1);
    }

    #[test]
    fn kernel_modules_and_pinned_bpf_objects() {
        let doc = br#"{"collected_at":"2026-11-29T10:05:00Z","modules":[
            {"name":"nf_tables","size":348160,"refcount":3,"deps":["nfnetlink"],"state":"Live","address":"0x0","taint":""},
            {"name":"diamorphine","size":16384,"refcount":0,"deps":[],"state":"Live","address":"0x0","taint":"OE"},
            {"size":1}],
            "bpf_pinned":[{"path":"/sys/fs/bpf/cairn","kind":"directory","fdinfo":{}},
            {"path":"/sys/fs/bpf/x/prog","kind":"prog","fdinfo":{"prog_type":"1","prog_tag":"a1b2"}}],"errors":[]}"#;
        let p = run(|d, t, p| kernel(d, t, p), doc, 0);
        let msgs: Vec<&str> = p
            .events
            .iter()
            .filter(|e| e.kind != "unparsed")
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(
            msgs,
            [
                "kernel module nf_tables",
                "kernel module diamorphine",
                "pinned bpf prog /sys/fs/bpf/x/prog (1)"
            ]
        );
        assert_eq!(p.events[1].attrs["taint"], "OE");
        assert_eq!(
            p.events[0].time_ns,
            cairn_protocol::rfc3339::parse_ns("2026-11-29T10:05:00Z").unwrap()
        );
        assert_eq!(p.events[3].path.as_deref(), Some("/sys/fs/bpf/x/prog"));
        // The module without a name is kept as unparsed, not dropped.
        assert_eq!(p.unparsed, 1);
        assert_eq!(run(|d, t, p| kernel(d, t, p), b"[1,2", 0).unparsed, 1);
    }

    #[test]
    fn event_journal_lines_keep_their_live_keys() {
        let line = r#"{"time":"2026-11-29T09:57:52.065472261Z","kind":"process_exec","source":"ebpf","process":{"pid":7,"ppid":1,"uid":0,"comm":"sh","exe":"/bin/sh","args":["sh"]}}"#;
        let long = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_LINE));
        let text = format!("{line}\r\n\n{long}\nnot json\n{line}");
        let p = run(|d, t, p| event_journal(d, t, p), text.as_bytes(), 3);
        let kinds: Vec<&str> = p.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["process_exec", "unparsed", "unparsed", "process_exec"]
        );
        assert_eq!(p.unparsed, 2);
        let live = super::super::ebpf::from_line(line).unwrap();
        assert_eq!(p.events[0].dedup, live.dedup);
        assert_eq!(p.events[3].dedup, live.dedup);
        // The two unreadable lines are dated by the event before them, and keyed apart.
        assert_eq!(p.events[1].time_ns, live.time_ns);
        assert_ne!(p.events[1].dedup, p.events[2].dedup);
        assert!(run(|d, t, p| event_journal(d, t, p), b"", 0)
            .events
            .is_empty());
        assert_eq!(run(|d, t, p| event_journal(d, t, p), b"{", 0).unparsed, 1);
    }

    #[test]
    fn documents_over_the_cap_are_not_parsed() {
        let big = vec![b' '; MAX_DOCUMENT as usize + 1];
        let mut p = Parsed::default();
        let err = super::processes(big.as_slice(), 0, &mut p).unwrap_err();
        assert!(matches!(err, Stop::TooLarge { .. }), "{err}");
        assert!(p.events.is_empty());
        assert_eq!(processes(b"", 0).unparsed, 1);
        assert_eq!(network(b"{", 0).unparsed, 1);
    }
}
