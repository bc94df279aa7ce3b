//! `cargo xtask bench timeline`: the timeline engine and the trigger path.
//!
//! 1. Ingest N synthetic events (default 10 million, 20 hosts over a day, the mix of a busy
//!    fleet) through the collector's own insert path, against a plain bulk INSERT of the same
//!    rows into an index-less SQLite table in the same run (the baseline); then faceted queries
//!    (page of 100 + facet counts) with p50/p99. This runs in the collector crate's release
//!    example `bench_timeline` (through the same storage code), so the figures are optimised
//!    code's and nothing of the benchmark ships in the collector binary.
//! 2. Trigger to first chunk: a collector and an agent on loopback; `POST
//!    /api/v1/triggers/generic` (profiles `file` with a small file, and `volatile`), then the
//!    collection is polled every millisecond until its first item has a chunk stored.
//!    Interleaved with the same measure for `POST /api/v1/collections` (the analyst's path) as
//!    the baseline; the custody log's timestamps split the time between the collector→agent
//!    command path and the agent's capture before its first item.
//!
//! `--backend postgres` runs step 1 on a throwaway PostgreSQL started by the harness
//! (`TempPostgres`, its usual `-c` settings and nothing more): the collector's `Postgres`
//! store's `insert_timeline` against a plain binary `COPY … FROM STDIN` of the same rows into
//! an index-less table of the same database, then the same queries; the goals of #16
//! (≥ 150k events/s, one host-hour p50 ≤ 50 ms at 10M events) are printed beside the figures.
//! Trigger latency is not measured there (it is the SQLite run's).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use cairn_harness::{collector_with_agent_in, is_finished, Api, Bins};

use crate::procs::{build_release, section};

pub fn run(events: u64, triggers: u32, backend: Option<&str>) -> Result<()> {
    match backend {
        None | Some("sqlite") => {}
        Some("postgres") => return run_postgres(events),
        Some(other) => bail!("bench timeline: unknown --backend {other:?} (sqlite, postgres)"),
    }
    let bins = build_release()?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-timeline-")
        .tempdir()?;

    section(&format!("ingest {events} events, then faceted queries"));
    let example = crate::procs::build_release_example("cairn-collector", "bench_timeline")?;
    let mut cmd = std::process::Command::new(&example);
    cmd.arg("--dir")
        .arg(tmp.path().join("ingest"))
        .args(["--events", &events.to_string()]);
    let r = crate::procs::run_example_json(cmd, "bench_timeline")?;
    std::fs::remove_dir_all(tmp.path().join("ingest")).ok();
    let f = |p: &str| r.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);

    section(&format!("trigger to first chunk, {triggers} runs each"));
    let lat = trigger_latency(&bins, &tmp.path().join("stack"), triggers)?;

    section("results");
    println!(
        "ingest ({} events, 20 hosts, batches of 10,000):",
        r["events"]
    );
    println!(
        "  cairn timeline (rows + indexes (host,time,key) unique, (kind,time), (time)): {:>10.0} events/s",
        f("/cairn_events_per_s")
    );
    println!(
        "  baseline: plain bulk INSERT, no index, same rows, same run:      {:>10.0} events/s",
        f("/baseline_events_per_s")
    );
    println!(
        "  ratio cairn/baseline: {:.2}   database: {:.2} GiB",
        f("/ratio"),
        f("/db_bytes") / (1u64 << 30) as f64
    );
    println!("faceted query (page of 100 + counts by host, kind, user, container, source):");
    for (name, key) in [
        ("one host, one hour   ", "query_host_hour"),
        ("all hosts, day, kind ", "query_fleet_kind"),
        ("all hosts, day, text ", "query_fleet_text"),
    ] {
        println!(
            "  {name} p50 {:>8.2} ms  p99 {:>8.2} ms  (~{} rows matched)",
            f(&format!("/{key}/p50_ms")),
            f(&format!("/{key}/p99_ms")),
            r[key]["rows_matched_avg"]
        );
    }
    println!("trigger to first chunk on loopback ({triggers} runs per line):");
    for (profile, l) in &lat {
        println!("  profile {profile}:");
        println!(
            "    POST /api/v1/triggers/generic  p50 {:>7.1} ms  p99 {:>7.1} ms",
            pct(&l.trigger, 0.5),
            pct(&l.trigger, 0.99)
        );
        println!("    POST /api/v1/collections       p50 {:>7.1} ms  p99 {:>7.1} ms  (baseline; ratio {:.2})", pct(&l.plain, 0.5), pct(&l.plain, 0.99), pct(&l.trigger, 0.5) / pct(&l.plain, 0.5));
        println!("    of the trigger's time: to the agent's command_accepted p50 {:.1} ms, then to its first item p50 {:.1} ms", pct(&l.to_accepted, 0.5), pct(&l.to_item, 0.5));
    }
    Ok(())
}

/// Goals of #16 on PostgreSQL.
const GOAL_EVENTS_PER_S: f64 = 150_000.0;
const GOAL_HOST_HOUR_P50_MS: f64 = 50.0;

fn run_postgres(events: u64) -> Result<()> {
    section("a throwaway PostgreSQL (harness: TempPostgres)");
    let pg = cairn_harness::postgres::TempPostgres::start()?;
    let url = pg.url();
    section(&format!(
        "PostgreSQL: ingest {events} events, then faceted queries"
    ));
    let example = crate::procs::build_release_example("cairn-collector", "bench_timeline")?;
    let mut cmd = std::process::Command::new(&example);
    cmd.args(["--database", &url, "--events", &events.to_string()]);
    let r = crate::procs::run_example_json(cmd, "bench_timeline")?;
    let f = |p: &str| r.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };

    section("results (PostgreSQL)");
    println!("command: cargo xtask bench timeline --backend postgres --events {events}");
    println!(
        "server: PostgreSQL {} (harness TempPostgres: fsync=off, synchronous_commit=off, full_page_writes=off)",
        r["server_version"].as_str().unwrap_or("?")
    );
    println!(
        "ingest ({} events, 20 hosts, batches of 10,000):",
        r["events"]
    );
    let rate = f("/cairn_events_per_s");
    println!(
        "  cairn Postgres::insert_timeline (COPY to staging + dedup INSERT; unique (host,time,dedup), (time), (kind,time), trigram): {rate:>10.0} events/s",
    );
    println!(
        "  baseline: plain binary COPY FROM STDIN, no index, same rows, same run, same database:               {:>10.0} events/s",
        f("/baseline_events_per_s")
    );
    println!(
        "  ratio cairn/baseline: {:.2}   timeline table + indexes: {:.2} GiB (baseline table {:.2} GiB)",
        f("/ratio"),
        f("/db_bytes") / (1u64 << 30) as f64,
        f("/baseline_bytes") / (1u64 << 30) as f64
    );
    println!(
        "  goal ≥ {GOAL_EVENTS_PER_S:.0} events/s: {}",
        met(rate >= GOAL_EVENTS_PER_S)
    );
    println!("faceted query (page of 100 + counts by host, kind, user, container, source):");
    for (name, key) in [
        ("one host, one hour   ", "query_host_hour"),
        ("all hosts, day, kind ", "query_fleet_kind"),
        ("all hosts, day, text ", "query_fleet_text"),
    ] {
        println!(
            "  {name} p50 {:>8.2} ms  p99 {:>8.2} ms  (~{} rows matched)",
            f(&format!("/{key}/p50_ms")),
            f(&format!("/{key}/p99_ms")),
            r[key]["rows_matched_avg"]
        );
    }
    let p50 = f("/query_host_hour/p50_ms");
    println!(
        "  goal one host, one hour p50 ≤ {GOAL_HOST_HOUR_P50_MS:.0} ms: {}",
        met(p50 <= GOAL_HOST_HOUR_P50_MS)
    );
    println!("json: {r}");
    Ok(())
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort();
    s.get(((s.len().max(1) - 1) as f64 * p).round() as usize)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// Time from the POST to the first stored chunk of the collection it started.
fn first_chunk(api: &Api, path: &str, body: &Value) -> Result<(Duration, String)> {
    let start = Instant::now();
    let resp = api.post(path, body)?;
    let id = resp["id"]
        .as_str()
        .ok_or_else(|| anyhow!("{path} answered without an id: {resp}"))?
        .to_string();
    let elapsed = loop {
        let v = api.get(&format!("/api/v1/collections/{id}"))?;
        let got = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["chunks_received"].as_u64().unwrap_or(0) > 0);
        if got {
            break start.elapsed();
        }
        if is_finished(v["status"].as_str().unwrap_or("")) {
            bail!("collection {id} finished without a chunk: {v}");
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no chunk of collection {id} after 60 s: {v}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // Let it finish, so runs do not overlap.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !is_finished(
        api.get(&format!("/api/v1/collections/{id}"))?["status"]
            .as_str()
            .unwrap_or(""),
    ) {
        if Instant::now() > deadline {
            bail!("collection {id} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((elapsed, id))
}

/// Time between two custody records of a collection (by action), from their timestamps.
fn custody_gap(api: &Api, id: &str, from: &str, to: &str) -> Result<Duration> {
    let log = api.get(&format!("/api/v1/collections/{id}/custody"))?;
    let at = |action: &str| -> Result<time::OffsetDateTime> {
        let rec = log["records"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["action"] == action)
            .ok_or_else(|| anyhow!("no {action} in the custody log of {id}"))?;
        Ok(time::OffsetDateTime::parse(
            rec["time"].as_str().unwrap_or(""),
            &time::format_description::well_known::Rfc3339,
        )?)
    };
    Ok((at(to)? - at(from)?).try_into().unwrap_or_default())
}

/// For one profile: trigger latencies, `POST /collections` latencies, and where the trigger's
/// time went (collector → agent accepted; accepted → first item opened).
struct Latencies {
    trigger: Vec<Duration>,
    plain: Vec<Duration>,
    to_accepted: Vec<Duration>,
    to_item: Vec<Duration>,
}

fn trigger_latency(
    bins: &Bins,
    dir: &std::path::Path,
    runs: u32,
) -> Result<Vec<(&'static str, Latencies)>> {
    // Every run is a new alert: no dedup, and a rate limit that lets the bench through.
    let (collector, _agent, host_id) = collector_with_agent_in(bins, dir, |data| {
        std::fs::write(data.join("triggers.toml"), "rate_limit_per_host = 100000\n")
            .context("writing triggers.toml")
    })?;
    let api = collector.api()?;
    let small = dir.join("small-file.txt");
    std::fs::write(&small, "evidence\n".repeat(100))?;
    std::thread::sleep(Duration::from_secs(2)); // the agent's sensor and first heartbeat
    let mut out = Vec::new();
    for profile in ["file", "volatile"] {
        let mut l = Latencies {
            trigger: Vec::new(),
            plain: Vec::new(),
            to_accepted: Vec::new(),
            to_item: Vec::new(),
        };
        let paths = if profile == "file" {
            json!([small.to_string_lossy()])
        } else {
            json!([])
        };
        for i in 0..runs {
            let body = json!({"host": host_id, "reason": format!("bench trigger {i}"), "profile": profile,
                              "dedup_key": format!("bench-{profile}-{i}"), "paths": paths});
            let (d, id) = first_chunk(&api, "/api/v1/triggers/generic", &body)?;
            l.trigger.push(d);
            l.to_accepted.push(custody_gap(
                &api,
                &id,
                "trigger_received",
                "command_accepted",
            )?);
            l.to_item
                .push(custody_gap(&api, &id, "command_accepted", "item_started")?);
            let body = json!({"host": host_id, "reason": format!("bench collection {i}"), "profile": profile, "paths": paths});
            l.plain
                .push(first_chunk(&api, "/api/v1/collections", &body)?.0);
        }
        out.push((profile, l));
    }
    Ok(out)
}
