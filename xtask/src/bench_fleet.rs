//! `cargo xtask bench fleet` (issue #17): profiles and outlier scores for HOSTS hosts in
//! GROUPS scaling groups from EVENTS events, through the collector's own code (the
//! `bench_fleet` example, release build): the full report, then the report recomputed after
//! an hour of new events (goal ≤ 2 s), and the memory it takes. Baseline, same run, same
//! database: the hand-written stacking query (`GROUP BY host, exe`) over the same window.

use anyhow::Result;
use serde_json::Value;

use crate::procs::section;

pub fn run(hosts: usize, groups: usize, events: u64) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-fleet-")
        .tempdir()?;
    section(&format!(
        "fleet: {hosts} hosts in {groups} groups, {events} events over a day"
    ));
    let example = crate::procs::build_release_example("cairn-collector", "bench_fleet")?;
    let mut cmd = std::process::Command::new(&example);
    cmd.arg("--dir")
        .arg(tmp.path().join("fleet"))
        .args(["--hosts", &hosts.to_string()])
        .args(["--groups", &groups.to_string()])
        .args(["--events", &events.to_string()]);
    let r = crate::procs::run_example_json(cmd, "bench_fleet")?;
    let f = |p: &str| r.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    section("results");
    println!(
        "command: cargo xtask bench fleet --hosts {hosts} --groups {groups} --events {events}"
    );
    println!(
        "data: {} events in the collector's SQLite store (filled in {:.1} s), {} groups (asgs and VPCs)",
        r["events"], f("/fill_s"), r["groups"]
    );
    println!(
        "full report (groups, profiles of 4 feature kinds, scores):     {:>8.2} s",
        f("/full_report_s")
    );
    println!(
        "after an hour of new events ({}): recompute                {:>8.2} s  (goal <= 2 s: {})",
        r["hour_events"],
        f("/recompute_after_hour_s"),
        if f("/recompute_after_hour_s") <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "baseline: one hand-written stacking query (GROUP BY host, exe):{:>8.2} s  ({} rows)",
        f("/baseline_stack_s"),
        r["baseline_rows"]
    );
    println!(
        "ratio baseline / cairn recompute: {:.2} (cairn reads 4 feature kinds, groups and scores)",
        f("/ratio_baseline_over_cairn")
    );
    println!(
        "memory: RSS {:.0} MB before the report, {:.0} MB after, peak {:.0} MB (the fill included)",
        f("/rss_kb_before_report") / 1024.0,
        f("/rss_kb_after_report") / 1024.0,
        f("/peak_rss_kb") / 1024.0
    );
    println!(
        "outliers: {} flagged = {} planted (one host in each of 5 groups runs a payload and connects to 198.51.100.7:4444)",
        r["flagged"], r["planted"]
    );
    println!("json: {r}");
    Ok(())
}
