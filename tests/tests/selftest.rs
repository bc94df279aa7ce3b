//! `cairn-agent selftest`: without CAP_BPF the BPF check fails with a remediation and the exit
//! code says so; with the collector stopped reachability fails and names the address; and a
//! host's readiness history at the collector shows a failure turning into a pass once fixed.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_harness::serde_json::Value;
use cairn_harness::*;

/// `cairn-agent selftest --json` with a state directory, optionally under
/// `capsh --drop=CAPS --` (the capabilities leave the bounding set, so the agent exec'd by the
/// shell never has them).
fn selftest(state: &Path, drop_caps: Option<&str>, report: bool) -> (Output, Value) {
    let agent = bin("cairn-agent").unwrap();
    let mut args = vec![
        agent.display().to_string(),
        "selftest".into(),
        "--json".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    if !report {
        args.push("--no-report".into());
    }
    let mut cmd = match drop_caps {
        Some(caps) => {
            let mut c = Command::new("capsh");
            c.arg(format!("--drop={caps}"))
                .arg("--")
                .arg("-c")
                .arg(format!("exec {}", args.join(" ")));
            c
        }
        None => {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        }
    };
    cmd.env_remove("CAIRN_AGENT_STATE");
    let out = run(cmd, Duration::from_secs(120)).unwrap();
    let json = out.json().unwrap_or_else(|e| panic!("{e:#}"));
    (out, json)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

#[test]
fn without_cap_bpf_the_bpf_check_fails_with_a_remediation() {
    let work = workdir("selftest-caps").unwrap();
    let state = work.path().join("state");

    // Positive control: with every capability the probe loads, attaches and fires.
    let (_, full) = selftest(&state, None, false);
    let load = check(&full, "bpf.load_attach");
    assert_eq!(load["status"], "pass", "{load:#}");
    assert_eq!(check(&full, "bpf.ring_buffer")["status"], "pass");

    let (out, report) = selftest(&state, Some("cap_bpf,cap_sys_admin"), false);
    assert_eq!(
        out.code,
        Some(1),
        "{}",
        out.describe("should exit 1 on a failed check")
    );
    assert_eq!(report["status"], "fail");
    let load = check(&report, "bpf.load_attach");
    assert_eq!(load["status"], "fail", "{load:#}");
    let fix = load["remediation"].as_str().unwrap();
    assert!(
        fix.contains("CAP_BPF") && fix.contains("CAP_PERFMON"),
        "{fix}"
    );
    let caps = check(&report, "capabilities");
    assert_eq!(caps["status"], "fail", "{caps:#}");
    assert!(
        caps["measured"].as_str().unwrap().contains("CAP_BPF"),
        "{caps:#}"
    );
    // Every check is there and says what it measured.
    for c in report["checks"].as_array().unwrap() {
        assert!(!c["measured"].as_str().unwrap().is_empty(), "{c:#}");
        if c["status"] != "pass" {
            assert!(!c["remediation"].as_str().unwrap().is_empty(), "{c:#}");
        }
    }
}

#[test]
fn with_the_collector_stopped_reachability_fails_and_names_the_address() {
    let work = workdir("selftest-stopped").unwrap();
    let mut collector = Collector::start(work.path()).unwrap();
    let agent = Agent::enroll(&collector, work.path()).unwrap();
    let (_, up) = selftest(&agent.state, None, false);
    assert_eq!(
        check(&up, "collector.reachability")["status"],
        "pass",
        "{up:#}"
    );
    let trip = check(&up, "collector.evidence_round_trip");
    assert_eq!(trip["status"], "pass", "{trip:#}");

    collector.kill();
    let (out, down) = selftest(&agent.state, None, true);
    assert_eq!(out.code, Some(1), "{}", out.describe("should exit 1"));
    let reach = check(&down, "collector.reachability");
    assert_eq!(reach["status"], "fail", "{reach:#}");
    let measured = reach["measured"].as_str().unwrap();
    assert!(measured.contains(&collector.quic_addr()), "{measured}");
    assert!(
        reach["remediation"]
            .as_str()
            .unwrap()
            .contains(&collector.quic_port.to_string()),
        "{reach:#}"
    );
    assert_eq!(
        check(&down, "collector.evidence_round_trip")["status"],
        "fail"
    );
    // The report is kept for when the collector is back.
    assert!(out.stderr.contains("kept in"), "{}", out.stderr);
    assert!(agent.state.join("readiness-pending.jsonl").exists());
}

/// A small loop device, so that the disk check finds a block device it may open even where
/// the machine's own disks are closed to us; detached on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(dir: &Path) -> LoopDevice {
        let img = dir.join("disk.img");
        write_random_file(&img, 1 << 20, 7).unwrap();
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--read-only"]).arg(&img);
        let out = run(cmd, CLI_TIMEOUT).unwrap().ok().unwrap();
        LoopDevice(out.stdout.trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn readiness_history_shows_fail_then_pass_after_the_fix() {
    let work = workdir("selftest-history").unwrap();
    let _disk = LoopDevice::attach(work.path());
    let mut collector = Collector::start(work.path()).unwrap();
    let agent = Agent::enroll(&collector, work.path()).unwrap();
    let host = agent.enroll_stdout.trim().to_string();

    // Broken twice over: the collector is down, and the agent runs without CAP_BPF.
    collector.kill();
    let (_, broken) = selftest(&agent.state, Some("cap_bpf,cap_sys_admin"), true);
    assert_eq!(broken["status"], "fail");
    // Fixed: the collector is back and the agent has its capabilities again. The report kept
    // while the collector was down is delivered first, then this one.
    collector.restart().unwrap();
    let (out, fixed) = selftest(&agent.state, None, true);
    assert!(
        out.stderr.contains("2 report(s) delivered"),
        "{}",
        out.stderr
    );
    assert_eq!(check(&fixed, "bpf.load_attach")["status"], "pass");
    assert_eq!(check(&fixed, "collector.reachability")["status"], "pass");

    let h = collector
        .api_get(&format!("/api/v1/hosts/{host}/readiness"))
        .unwrap();
    let history = h["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{h:#}");
    let (newest, oldest) = (&history[0], &history[1]);
    assert_eq!(oldest["status"], "fail", "{h:#}");
    let status_of = |entry: &Value, id: &str| {
        entry["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == id))
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    };
    for id in ["bpf.load_attach", "collector.reachability"] {
        assert_eq!(status_of(oldest, id), "fail", "{id}: {h:#}");
        assert_eq!(status_of(newest, id), "pass", "{id}: {h:#}");
    }
    // The host's own verdict left fail (pass, or warn where this machine lacks e.g. a
    // synchronised clock), and `since` moved to the report that changed it.
    assert_ne!(newest["status"], "fail", "still failing: {newest:#}");
    assert_eq!(newest["changed"], true, "{h:#}");
    assert_eq!(h["readiness"], newest["status"]);
    assert_eq!(h["since"], newest["received_at"], "{h:#}");
    let hosts = collector.hosts().unwrap();
    let row = hosts.iter().find(|r| r["id"] == host.as_str()).unwrap();
    assert_eq!(row["readiness"], newest["status"]);
    assert_eq!(row["readiness_since"], newest["received_at"]);

    // The fleet view counts the host once today, by its last report.
    let fleet = collector.api_get("/api/v1/readiness").unwrap();
    let today = fleet["per_day"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    let verdict = newest["status"].as_str().unwrap();
    assert_eq!(today[verdict], 1, "{fleet:#}");
    assert_eq!(today["fail"], 0, "{fleet:#}");

    // The self-test's collection stays out of the analysts' list.
    let list = collector.cli_json(&["collections"]).unwrap();
    assert!(
        !list.to_string().contains("selftest"),
        "self-test collections are listed: {list}"
    );
}
