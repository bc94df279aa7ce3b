//! Volatile snapshots and the event journal item: process start times from `processes.json`,
//! sockets from `network.json` (dated by the snapshot's `collected_at`), and the sensor events
//! a collection carries in `events.jsonl`.

use crate::timeline::{dedup_key, Event, Parsed};
use serde_json::Value;

/// The snapshot's JSON, or `None` with the whole item kept as one unparsed event.
fn document(data: &[u8], mtime_ns: i64, name: &str, out: &mut Parsed) -> Option<Value> {
    match serde_json::from_slice(data) {
        Ok(v) => Some(v),
        Err(e) => {
            out.unparsed(mtime_ns, name, name, &format!("not JSON: {e}"));
            None
        }
    }
}

/// `processes.json` → one `process_start` per process with a start time (kernel threads left
/// out: they start at boot and say nothing about an intrusion).
pub fn processes(data: &[u8], mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let Some(doc) = document(data, mtime_ns, "processes.json", &mut out) else {
        return out;
    };
    for p in doc["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if p["kernel_thread"].as_bool() == Some(true) {
            continue;
        }
        let Some(t) = p["start_time"]
            .as_str()
            .and_then(cairn_protocol::rfc3339::parse_ns)
        else {
            if !p["vanished"].as_bool().unwrap_or(false) {
                out.unparsed(
                    mtime_ns,
                    "processes.json",
                    &p["pid"].to_string(),
                    "process without start_time",
                );
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
        out.events.push(e);
    }
    out
}

/// `network.json` → the sockets seen at the snapshot: connections and listeners.
pub fn network(data: &[u8], mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let Some(doc) = document(data, mtime_ns, "network.json", &mut out) else {
        return out;
    };
    let t = doc["collected_at"]
        .as_str()
        .and_then(cairn_protocol::rfc3339::parse_ns)
        .unwrap_or(mtime_ns);
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
            e.dedup = dedup_key(&[
                b"socket",
                &t.to_le_bytes(),
                proto.as_bytes(),
                s["inode"].to_string().as_bytes(),
                s["local_port"].to_string().as_bytes(),
                s["remote_address"].to_string().as_bytes(),
                s["remote_port"].to_string().as_bytes(),
            ]);
            out.events.push(e);
        }
    }
    out
}

/// `events.jsonl` (the flight recorder's window): sensor events, keyed like the live stream.
pub fn event_journal(text: &str, mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let mut last = mtime_ns;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match super::ebpf::from_line(line) {
            Some(e) => {
                last = e.time_ns;
                out.events.push(e);
            }
            None => out.unparsed(last, "event_journal", line, "not a sensor event"),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

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
        assert_eq!(processes(b"{not json", 5).unparsed, 1);
    }
}
