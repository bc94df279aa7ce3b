//! The recent past travels with the evidence: a process run on the host after the agent
//! started shows up, with its exact argv, in the collector's live events and in the
//! `events.jsonl` item (the flight recorder's window) of the next collection.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_harness::*;
use serde_json::Value;

fn is_marker_exec(e: &Value, marker: &str) -> bool {
    e["kind"] == "process_exec"
        && e["process"]["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
}

#[test]
fn exec_reaches_live_events_and_the_collection_journal() {
    let work = workdir("events").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("cairn-e2e-mark-{nanos}");
    // Give the agent's sensor time to attach (it starts with `run`).
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("/bin/sh")
        .args(["-c", &format!("exec /bin/echo {marker} 'two words'")])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    // Live: the collector's event table has it, with the exact argv.
    let live = wait_for(
        "the marker exec in the collector's live events",
        Duration::from_secs(60),
        || {
            let v = collector.api_get(&format!(
                "/api/v1/hosts/{host}/events?kind=process_exec&limit=100000"
            ))?;
            Ok(v["events"]
                .as_array()
                .and_then(|evs| evs.iter().find(|e| is_marker_exec(e, &marker)).cloned()))
        },
    )
    .unwrap();
    assert_eq!(
        live["process"]["args"],
        serde_json::json!(["/bin/echo", marker, "two words"]),
        "{live}"
    );
    assert_eq!(
        live["source"], "ebpf",
        "the sensor must run on eBPF here: {live}"
    );

    // Flight recorder: the next collection carries it in events.jsonl.
    let c = collector
        .collect_wait(
            &host,
            "volatile",
            "e2e: journal",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));
    let journal = items(&c)
        .into_iter()
        .find(|i| i["name"] == "events.jsonl")
        .unwrap_or_else(|| panic!("no events.jsonl item: {}", summary(&c)));
    let out = work.path().join("events.jsonl");
    collector.export(&s(&journal, "id").unwrap(), &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exec = events
        .iter()
        .find(|e| is_marker_exec(e, &marker))
        .unwrap_or_else(|| panic!("marker exec missing from {} journal events", events.len()));
    assert_eq!(exec["process"]["args"][2], "two words");
    assert_eq!(sha256_file(&out).unwrap(), s(&journal, "sha256").unwrap());
}

#[test]
fn events_made_while_the_collector_is_down_wait_on_disk_and_arrive_when_it_returns() {
    let work = workdir("events-spool").unwrap();
    let (mut collector, agent, host) = collector_with_agent(work.path()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    collector.kill();

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("cairn-spool-{nanos}-");
    // ~25,000 events (fork, exec, exit per echo): more than the 2 MiB the agent keeps in memory.
    let n = 8000;
    let status = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {n} ]; do /bin/echo {prefix}$i; i=$((i+1)); done"),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let spool = agent.state.join("event-spool");
    let spooled = wait_for(
        "the agent to spill events to its on-disk spool",
        Duration::from_secs(30),
        || {
            let files = std::fs::read_dir(&spool)
                .map(|d| d.flatten().count())
                .unwrap_or(0);
            Ok((files > 0).then_some(files))
        },
    )
    .unwrap();

    collector.restart().unwrap();
    let seen = wait_for(
        "every exec made during the outage in the collector's events",
        Duration::from_secs(180),
        || {
            let v = collector.api_get(&format!(
                "/api/v1/hosts/{host}/events?kind=process_exec&limit=1000000"
            ))?;
            let marks: std::collections::BTreeSet<String> = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["process"]["args"][1].as_str())
                .filter(|a| a.starts_with(&prefix))
                .map(str::to_string)
                .collect();
            Ok((marks.len() == n).then_some(marks.len()))
        },
    )
    .unwrap();
    assert_eq!(seen, n);
    let left = wait_for(
        "the spool to empty once the collector acknowledged",
        Duration::from_secs(60),
        || {
            let files = std::fs::read_dir(&spool)
                .map(|d| d.flatten().count())
                .unwrap_or(0);
            Ok((files == 0).then_some(files))
        },
    )
    .unwrap();
    assert_eq!(left, 0, "{spooled} spool file(s) during the outage");
}
