//! Sensor events (docs/events.md) → timeline events.
//!
//! The agent serialises each event once and sends the same text to the live stream and to its
//! journal, so the event's key is the hash of that text: the copy in a collection's
//! `events.jsonl` lands on the row the live stream already wrote.

use crate::timeline::{dedup_key, Event};
use serde_json::Value;

/// One JSON line from the sensor. `None` when the line is not a JSON object with a time
/// (the caller keeps it as an unparsed event).
pub fn from_line(line: &str) -> Option<Event> {
    let v: Value = serde_json::from_str(line).ok()?;
    let t = cairn_protocol::rfc3339::parse_ns(v.get("time")?.as_str()?)?;
    let mut e = from_value(t, &v);
    e.dedup = dedup_key(&[b"ebpf", line.as_bytes()]);
    Some(e)
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn from_value(t: i64, v: &Value) -> Event {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("unknown");
    let source = v.get("source").and_then(Value::as_str).unwrap_or("ebpf");
    let p = &v["process"];
    let argv: Option<Vec<String>> = p.get("args").and_then(Value::as_array).map(|a| {
        a.iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    });
    let comm = s(p, "comm").unwrap_or_default();
    let who = format!(
        "{} (pid {})",
        s(p, "exe").unwrap_or_else(|| comm.clone()),
        p["pid"]
    );
    let sock = &v["socket"];
    let endpoint =
        |a: &str, port: &str| format!("{}:{}", sock[a].as_str().unwrap_or("?"), sock[port]);
    let message = match kind {
        "process_exec" => format!(
            "exec {}",
            argv.as_ref()
                .map(|a| a.join(" "))
                .unwrap_or_else(|| who.clone())
        ),
        "process_fork" => format!("fork {who} from pid {}", p["ppid"]),
        "process_exit" => format!("exit {who} {}", v["exit"]),
        "tcp_connect" => format!(
            "{who} connect {} -> {}",
            endpoint("saddr", "sport"),
            endpoint("daddr", "dport")
        ),
        "tcp_accept" => format!(
            "{who} accept {} <- {}",
            endpoint("saddr", "sport"),
            endpoint("daddr", "dport")
        ),
        "tcp_close" => format!(
            "{who} close {} - {}",
            endpoint("saddr", "sport"),
            endpoint("daddr", "dport")
        ),
        "security_call" => format!(
            "{who} {} {}",
            v["syscall"]["name"].as_str().unwrap_or("?"),
            v["syscall"]["detail"]
                .as_str()
                .or(v["syscall"]["text"].as_str())
                .unwrap_or("")
        ),
        "events_lost" => format!(
            "{} events lost ({})",
            v["lost"]["count"],
            v["lost"]["kind"].as_str().unwrap_or("?")
        ),
        other => format!("{other} {who}"),
    };
    let mut e = Event::new(t, source, kind, message.trim_end().to_string());
    e.pid = p["pid"].as_i64();
    e.ppid = p["ppid"].as_i64();
    e.exe = s(p, "exe");
    e.argv = argv;
    // The name when the host knows it (uid 0 is root everywhere), the uid beside it, so a
    // search by either finds the event.
    let uid = p["uid"].as_u64();
    e.user =
        s(p, "user").or_else(|| uid.map(|u| if u == 0 { "root".into() } else { u.to_string() }));
    if let Some(u) = uid {
        e.attrs
            .insert("uid".to_string(), serde_json::Value::String(u.to_string()));
    }
    e.container = s(p, "container_id");
    e.pod = s(p, "pod_uid");
    // What the query language and fleet profiles find a process and a connection by: the
    // parent's executable, and the remote end (`d*` is remote for connects and accepts).
    e.parent_exe = s(&v["parent"], "exe");
    let sock = &v["socket"];
    e.dst_addr = s(sock, "daddr");
    e.dst_port = sock["dport"].as_i64();
    for k in ["comm", "cwd", "cgroup"] {
        if let Some(x) = p.get(k) {
            e.attrs.insert(k.to_string(), x.clone());
        }
    }
    for k in ["socket", "syscall", "exit", "lost", "parent"] {
        if let Some(x) = v.get(k) {
            e.attrs.insert(k.to_string(), x.clone());
        }
    }
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn exec_event_from_the_documented_example() {
        let line = r#"{"time":"2026-11-29T09:57:52.065472261Z","kind":"process_exec","source":"ebpf","process":{"pid":29190,"tid":29190,"ppid":29153,"uid":0,"gid":0,"euid":0,"comm":"true","exe":"/bin/true","args":["/bin/true","a","b c"],"cwd":"/usr/share","cgroup_id":1,"cgroup":"/","start_time":"2026-11-29T09:57:52.063829304Z"},"parent":{"pid":29153,"comm":"bash"}}"#;
        let e = from_line(line).unwrap();
        assert_eq!(e.kind, "process_exec");
        assert_eq!(e.source, "ebpf");
        assert_eq!(e.message, "exec /bin/true a b c");
        assert_eq!(e.argv.as_ref().unwrap()[2], "b c");
        assert_eq!(e.pid, Some(29190));
        assert_eq!(e.ppid, Some(29153));
        assert_eq!(e.user.as_deref(), Some("root"), "uid 0 is root");
        assert_eq!(e.attrs["uid"], "0");
        let named = line.replace("\"uid\":0,", "\"uid\":1000,\"user\":\"alice\",");
        let alice = from_line(&named).unwrap();
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert_eq!(alice.attrs["uid"], "1000");
        let unnamed = line.replace("\"uid\":0,", "\"uid\":1001,");
        assert_eq!(from_line(&unnamed).unwrap().user.as_deref(), Some("1001"));
        assert_eq!(e.attrs["parent"]["comm"], "bash");
        assert_eq!(e.dedup, from_line(line).unwrap().dedup);
        assert!(from_line("{\"kind\":\"x\"}").is_none());
        assert_eq!(e.parent_exe, None, "the parent named no exe");
        let with_exe = line.replace(
            "\"comm\":\"bash\"}",
            "\"comm\":\"bash\",\"exe\":\"/bin/bash\"}",
        );
        assert_eq!(
            from_line(&with_exe).unwrap().parent_exe.as_deref(),
            Some("/bin/bash")
        );
    }

    #[test]
    fn a_connect_is_found_by_its_remote_end() {
        let line = r#"{"time":"2026-11-29T09:57:53Z","kind":"tcp_connect","source":"ebpf","process":{"pid":7,"ppid":1,"comm":"curl","exe":"/usr/bin/curl"},"socket":{"family":"inet","protocol":"tcp","saddr":"10.0.1.5","sport":40000,"daddr":"198.51.100.7","dport":4444,"result":-115,"cookie":"ab"}}"#;
        let e = from_line(line).unwrap();
        assert_eq!(e.dst_addr.as_deref(), Some("198.51.100.7"));
        assert_eq!(e.dst_port, Some(4444));
        assert_eq!(e.exe.as_deref(), Some("/usr/bin/curl"));
    }
}
