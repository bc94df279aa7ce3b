//! `cargo xtask bench load`: one collector, N agents, a volatile collection on all at once.
//!
//! The agents are simulated by the agent crate's load generator (`agent/examples/loadgen.rs`):
//! each enrolls, holds its own QUIC connection with mutual TLS and uploads its items with the
//! agent's own transport. A thousand real `cairn-agent` processes would need more memory than
//! this machine has. Measured at the collector: agents connected, collections sealed and
//! verified, time to all sealed, peak (VmHWM) and settled (VmRSS 30 s after the last seal)
//! resident memory, CPU seconds. Baseline, same run: one agent on a fresh collector, the same
//! collection three times one after the other; the ratio compares its time per collection
//! with the time per collection at N (all sealed ÷ N).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use cairn_harness::{is_finished, tail_file, Api, Bins, Collector, Managed};

use crate::bench_sensor::cpu_seconds;
use crate::procs::{build_release, section};

/// Agents per generator process: 1,000 UDP sockets and their state files are far from the
/// 20,000 descriptors allowed, and one tokio runtime drives them on the two cores.
const AGENTS_PER_PROCESS: usize = 1000;
/// Parallel API clients for the requests and the verifications ("all at once").
const API_CLIENTS: usize = 8;
/// How long after the last seal the settled RSS is read.
const SETTLE: Duration = Duration::from_secs(30);

/// A value of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn parse_time(v: &Value, key: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.get(key)?.as_str()?, &Rfc3339).ok()
}

/// Samples the collector's VmRSS every 100 ms until dropped; keeps the highest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max_kb.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kb) = status_kb(pid, "VmRSS") {
                    m.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            max_kb,
            thread: Some(thread),
        }
    }

    fn max_kb(&self) -> u64 {
        self.max_kb.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Outcome {
    agents: usize,
    connected: usize,
    connect_secs: f64,
    requested: usize,
    statuses: BTreeMap<String, usize>,
    sealed: usize,
    verified: usize,
    verify_problems: Vec<String>,
    peak_queued: usize,
    peak_running: usize,
    /// Collector clock: first `requested_at` to last `finished_at`, per round.
    rounds_secs: Vec<f64>,
    /// Each collection's own `finished_at - requested_at`.
    per_collection_secs: Vec<f64>,
    wall_to_sealed_secs: f64,
    verify_secs: f64,
    peak_rss_kb: u64,
    sampled_peak_rss_kb: u64,
    settled_rss_kb: u64,
    /// (RssAnon, RssFile) at the settled point: heap (SQLite's page cache is heap too) or
    /// mapped files.
    settled_split_kb: (u64, u64),
    rss_after_verify_kb: u64,
    rss_connected_kb: u64,
    cpu_total: f64,
    cpu_collections: f64,
    generator: Vec<Value>,
    generator_peak_rss_kb: u64,
    /// The collector's WARN and ERROR lines: how many, and the first few.
    collector_warnings: (usize, Vec<String>),
    generator_warnings: (usize, Vec<String>),
}

/// WARN and ERROR lines of a log: how many, and the first five.
fn warnings(log: &Path) -> (usize, Vec<String>) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let first = bad
        .iter()
        .take(5)
        .map(|l| l.chars().take(300).collect())
        .collect();
    (bad.len(), first)
}

fn push<T>(m: &Mutex<Vec<T>>, v: T) {
    m.lock().unwrap_or_else(|p| p.into_inner()).push(v);
}

/// Requests the collections in parallel; returns their ids.
pub(crate) fn request_all(c: &Collector, hosts: &[String], reason: &str) -> Result<Vec<String>> {
    let ids = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let chunk = hosts.len().div_ceil(API_CLIENTS).max(1);
    std::thread::scope(|s| {
        for part in hosts.chunks(chunk) {
            let (ids, errors) = (&ids, &errors);
            s.spawn(move || {
                let api = match c.api() {
                    Ok(a) => a,
                    Err(e) => return push(errors, format!("{e:#}")),
                };
                for h in part {
                    let body = json!({"host": h, "profile": "volatile", "reason": reason});
                    match api.post("/api/v1/collections", &body) {
                        Ok(v) => match v.get("id").and_then(Value::as_str) {
                            Some(id) => push(ids, id.to_string()),
                            None => push(errors, format!("no id in {v}")),
                        },
                        Err(e) => push(errors, format!("{e:#}")),
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if let Some(first) = errors.first() {
        println!("{} request(s) refused, first: {first}", errors.len());
    }
    Ok(ids.into_inner().unwrap_or_default())
}

/// The collections `ids` as the list endpoint shows them, walked a page of 1,000 at a time by
/// its cursor (one GET per collection, at 10,000 of them, was itself a load on the collector
/// it measures), until every id was seen.
fn collection_rows(api: &Api, ids: &HashSet<String>) -> Result<Vec<Value>> {
    let mut found = Vec::new();
    let mut path = "/api/v1/collections?limit=1000".to_string();
    loop {
        let v = api.get(&path)?;
        let rows = v
            .get("collections")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no collections in {v}"))?;
        found.extend(
            rows.iter()
                .filter(|r| {
                    r.get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|i| ids.contains(i))
                })
                .cloned(),
        );
        match v.get("next").and_then(Value::as_str) {
            Some(next) if found.len() < ids.len() => {
                path = format!("/api/v1/collections?limit=1000&before={next}")
            }
            _ => return Ok(found),
        }
    }
}

/// Polls until every collection is final or `timeout`; returns the rows and the peak numbers
/// seen `queued` and `running` (or `paused`).
pub(crate) fn wait_sealed(
    api: &Api,
    ids: &[String],
    timeout: Duration,
) -> Result<(Vec<Value>, usize, usize)> {
    let want: HashSet<String> = ids.iter().cloned().collect();
    let start = Instant::now();
    let (mut peak_queued, mut peak_running) = (0, 0);
    let mut last_print = Instant::now();
    loop {
        let rows = collection_rows(api, &want)?;
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for r in &rows {
            let s = r.get("status").and_then(Value::as_str).unwrap_or("?");
            *by.entry(s.to_string()).or_default() += 1;
        }
        let count = |s: &str| by.get(s).copied().unwrap_or(0);
        peak_queued = peak_queued.max(count("queued"));
        peak_running = peak_running.max(count("running") + count("paused"));
        let finished = rows
            .iter()
            .filter(|r| is_finished(r.get("status").and_then(Value::as_str).unwrap_or("")))
            .count();
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!("  {:>6.1} s: {by:?}", start.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        if finished == want.len() || start.elapsed() > timeout {
            return Ok((rows, peak_queued, peak_running));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `POST /collections/{id}/verify` on each, in parallel; returns (ok ids, problems).
pub(crate) fn verify_all(c: &Collector, ids: &[String]) -> Result<(HashSet<String>, Vec<String>)> {
    let ok = Mutex::new(Vec::new());
    let problems = Mutex::new(Vec::new());
    let chunk = ids.len().div_ceil(API_CLIENTS / 2).max(1);
    std::thread::scope(|s| {
        for part in ids.chunks(chunk) {
            let (ok, problems) = (&ok, &problems);
            s.spawn(move || {
                let api = match c.api() {
                    Ok(a) => a,
                    Err(e) => return push(problems, format!("{e:#}")),
                };
                for id in part {
                    match api.post(&format!("/api/v1/collections/{id}/verify"), &json!({})) {
                        Ok(r) if r.get("ok").and_then(Value::as_bool) == Some(true) => {
                            push(ok, id.clone())
                        }
                        Ok(r) => {
                            let e = r.get("error").cloned().unwrap_or(Value::Null);
                            push(problems, format!("{id}: {e}"))
                        }
                        Err(e) => push(problems, format!("{id}: {e:#}")),
                    }
                }
            });
        }
    });
    let ok = ok.into_inner().unwrap_or_default().into_iter().collect();
    Ok((ok, problems.into_inner().unwrap_or_default()))
}

pub(crate) fn read_reports(paths: &[PathBuf]) -> Vec<Value> {
    paths
        .iter()
        .map(|p| {
            fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null)
        })
        .collect()
}

pub(crate) fn sum(reports: &[Value], key: &str) -> u64 {
    reports
        .iter()
        .filter_map(|r| r.get(key).and_then(Value::as_u64))
        .sum()
}

/// Starts the generators for `agents` agents.
/// Load generators of [`AGENTS_PER_PROCESS`] agents each; generator `i` connects to
/// `collectors[i % n]` (instances sharing one database take one token).
pub(crate) fn start_generators(
    loadgen: &Path,
    collectors: &[&Collector],
    dir: &Path,
    agents: usize,
    capture: &str,
) -> Result<(Vec<Managed>, Vec<PathBuf>)> {
    let first_collector = collectors
        .first()
        .ok_or_else(|| anyhow!("no collector for the load generators"))?;
    let token = first_collector.token_create(u32::try_from(agents)?, "2h")?;
    let mut procs = Vec::new();
    let mut reports = Vec::new();
    let mut first = 0;
    let mut i = 0;
    // At least one generator per collector, so a small fleet is spread over them too.
    let per_process = AGENTS_PER_PROCESS.min(agents.div_ceil(collectors.len()).max(1));
    while first < agents {
        let count = per_process.min(agents - first);
        let collector = collectors[i % collectors.len()];
        let report = dir.join(format!("loadgen-{i}.json"));
        let mut cmd = Command::new(loadgen);
        cmd.arg("--collector")
            .arg(collector.quic_addr())
            .args(["--token", &token, "--ca-sha256", &collector.init.ca_sha256])
            .args([
                "--agents",
                &count.to_string(),
                "--first",
                &first.to_string(),
            ])
            .arg("--state")
            .arg(dir.join(format!("agents-{i}")))
            .arg("--report")
            .arg(&report)
            .args(["--capture", capture])
            .env("RUST_LOG", "warn");
        let log = dir.join(format!("loadgen-{i}.log"));
        procs.push(Managed::spawn("loadgen", cmd, &log)?);
        reports.push(report);
        first += count;
        i += 1;
    }
    Ok((procs, reports))
}

/// The ids of the hosts connected now.
fn connected_hosts(api: &Api) -> Result<Vec<String>> {
    let v = api.get("/api/v1/hosts")?;
    Ok(v.get("hosts")
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter(|h| h.get("connected").and_then(Value::as_bool) == Some(true))
                .filter_map(|h| h.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// One collector, `agents` agents, `rounds` rounds of a volatile collection on every agent
/// (each round all at once, the next when it has finished).
fn one_run(
    bins: &Bins,
    loadgen: &Path,
    dir: &Path,
    agents: usize,
    rounds: usize,
    capture: &str,
) -> Result<Outcome> {
    fs::create_dir_all(dir)?;
    let mut collector = Collector::start_in(bins, &dir.join("collector"), |_| Ok(()))?;
    let pid = collector
        .pid()
        .ok_or_else(|| anyhow!("the collector has no pid"))?;
    let rss = RssSampler::start(pid);
    let api = collector.api()?;
    let t0 = Instant::now();
    let (mut gens, report_paths) = start_generators(loadgen, &[&collector], dir, agents, capture)?;
    let mut out = Outcome {
        agents,
        ..Default::default()
    };

    // Connected: as the collector sees it.
    let connect_timeout = Duration::from_secs(120) + Duration::from_millis(200) * agents as u32;
    let mut hosts = Vec::new();
    let mut last_print = Instant::now();
    while t0.elapsed() < connect_timeout {
        collector.check_alive()?;
        for g in &mut gens {
            g.check_alive()?;
        }
        hosts = connected_hosts(&api)?;
        if hosts.len() >= agents {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            let r = read_reports(&report_paths);
            println!(
                "  {:>6.1} s: {} connected at the collector; generators: {} enrolled, {} welcomed",
                t0.elapsed().as_secs_f64(),
                hosts.len(),
                sum(&r, "enrolled"),
                sum(&r, "connected")
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    out.connected = hosts.len();
    out.connect_secs = t0.elapsed().as_secs_f64();
    out.rss_connected_kb = status_kb(pid, "VmRSS")?;
    println!(
        "{} / {agents} agents connected after {:.1} s; collector RSS {:.0} MiB",
        out.connected,
        out.connect_secs,
        mib(out.rss_connected_kb)
    );
    if hosts.is_empty() {
        bail!(
            "no agent connected; generator log:\n{}",
            tail_file(&dir.join("loadgen-0.log"), 30)
        );
    }

    let cpu_before = cpu_seconds(pid)?;
    let collect_start = Instant::now();
    let mut all_ids = Vec::new();
    let mut last_seal = Instant::now();
    for round in 0..rounds {
        let ids = request_all(
            &collector,
            &hosts,
            &format!("bench load round {}", round + 1),
        )?;
        out.requested += ids.len();
        let timeout = Duration::from_secs(1800);
        let (rows, queued, running) = wait_sealed(&api, &ids, timeout)?;
        last_seal = Instant::now();
        out.peak_queued = out.peak_queued.max(queued);
        out.peak_running = out.peak_running.max(running);
        let mut first_req: Option<OffsetDateTime> = None;
        let mut last_fin: Option<OffsetDateTime> = None;
        for r in &rows {
            let s = r.get("status").and_then(Value::as_str).unwrap_or("?");
            *out.statuses.entry(s.to_string()).or_default() += 1;
            let (req, fin) = (parse_time(r, "requested_at"), parse_time(r, "finished_at"));
            first_req = match (first_req, req) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last_fin = match (last_fin, fin) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let (Some(a), Some(b)) = (req, fin) {
                out.per_collection_secs.push((b - a).as_seconds_f64());
            }
        }
        if let (Some(a), Some(b)) = (first_req, last_fin) {
            out.rounds_secs.push((b - a).as_seconds_f64());
        }
        all_ids.extend(ids);
    }
    out.wall_to_sealed_secs = collect_start.elapsed().as_secs_f64();
    out.cpu_collections = cpu_seconds(pid)? - cpu_before;
    collector.check_alive()?;

    // Settled: what the collector keeps once the burst is over.
    let settle_at = last_seal + SETTLE;
    std::thread::sleep(settle_at.saturating_duration_since(Instant::now()));
    out.settled_rss_kb = status_kb(pid, "VmRSS")?;
    out.settled_split_kb = (status_kb(pid, "RssAnon")?, status_kb(pid, "RssFile")?);

    let rows = collection_rows(&api, &all_ids.iter().cloned().collect())?;
    let sealed: Vec<String> = rows
        .iter()
        .filter(|r| r.get("status").and_then(Value::as_str) == Some("sealed"))
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    out.sealed = sealed.len();
    let t = Instant::now();
    let (ok, problems) = verify_all(&collector, &all_ids)?;
    out.verify_secs = t.elapsed().as_secs_f64();
    out.verified = sealed.iter().filter(|id| ok.contains(*id)).count();
    out.verify_problems = problems;
    out.rss_after_verify_kb = status_kb(pid, "VmRSS")?;
    out.peak_rss_kb = status_kb(pid, "VmHWM")?;
    out.sampled_peak_rss_kb = rss.max_kb();
    out.cpu_total = cpu_seconds(pid)?;
    out.generator = read_reports(&report_paths);
    for g in &gens {
        if let Some(p) = g.pid() {
            out.generator_peak_rss_kb += status_kb(p, "VmHWM").unwrap_or(0);
        }
    }
    collector.check_alive()?;
    drop(gens);
    out.collector_warnings = warnings(&collector.log);
    let mut gen_warnings = (0, Vec::new());
    for i in 0..report_paths.len() {
        let (n, first) = warnings(&dir.join(format!("loadgen-{i}.log")));
        gen_warnings.0 += n;
        gen_warnings.1.extend(first);
    }
    gen_warnings.1.truncate(5);
    out.generator_warnings = gen_warnings;
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_outcome(o: &Outcome) {
    for (who, (n, first)) in [
        ("collector", &o.collector_warnings),
        ("generators", &o.generator_warnings),
    ] {
        println!("{who} log: {n} WARN/ERROR line(s)");
        for l in first {
            println!("  {l}");
        }
    }
    let g = &o.generator;
    println!(
        "agents connected          {} / {}  ({:.1} s from the generators' start)",
        o.connected, o.agents, o.connect_secs
    );
    println!(
        "collections sealed        {} / {} requested  (statuses {:?}; peak seen queued {}, \
         running {})",
        o.sealed, o.requested, o.statuses, o.peak_queued, o.peak_running
    );
    println!(
        "  sealed and verified     {} / {} requested  (verify took {:.1} s)",
        o.verified, o.requested, o.verify_secs
    );
    for p in o.verify_problems.iter().take(5) {
        println!("  verify problem: {p}");
    }
    let rounds: Vec<String> = o.rounds_secs.iter().map(|s| format!("{s:.2} s")).collect();
    println!(
        "time to all sealed        {}  (collector clock, first request → last seal; wall {:.1} s)",
        rounds.join(", "),
        o.wall_to_sealed_secs
    );
    println!(
        "  per collection          median {:.2} s from its request to its seal",
        median(&o.per_collection_secs)
    );
    println!(
        "collector RSS             peak {:.0} MiB (VmHWM; sampled {:.0}), settled {:.0} MiB \
         (VmRSS {} s after the last seal; anon {:.0}, file {:.0}), {:.0} MiB after verify, \
         {:.0} MiB when all connected",
        mib(o.peak_rss_kb),
        mib(o.sampled_peak_rss_kb),
        mib(o.settled_rss_kb),
        SETTLE.as_secs(),
        mib(o.settled_split_kb.0),
        mib(o.settled_split_kb.1),
        mib(o.rss_after_verify_kb),
        mib(o.rss_connected_kb)
    );
    println!(
        "collector CPU             {:.1} s in all, {:.1} s from the requests to the last seal",
        o.cpu_total, o.cpu_collections
    );
    println!(
        "generators saw            {} enrolled ({} failed), {} connected, {} sessions ({} ended), \
         {} commands, {} collections done, {} items sealed, {} failed, {} resumes; peak RSS {:.0} MiB",
        sum(g, "enrolled"),
        sum(g, "enroll_failed"),
        sum(g, "connected"),
        sum(g, "sessions"),
        sum(g, "disconnects"),
        sum(g, "commands"),
        sum(g, "collections_done"),
        sum(g, "items_sealed"),
        sum(g, "items_failed"),
        sum(g, "item_resumes"),
        mib(o.generator_peak_rss_kb)
    );
}

/// `cargo build --release --example loadgen -p cairn-agent`.
pub(crate) fn build_loadgen() -> Result<PathBuf> {
    crate::procs::build_release_example("cairn-agent", "loadgen")
}

pub fn run(agents: usize, capture: &str, instances: usize) -> Result<()> {
    if agents == 0 {
        bail!("--agents must be at least 1");
    }
    if instances > 1 {
        section("building release binaries and the load generator");
        let bins = build_release()?;
        let loadgen = build_loadgen()?;
        return crate::bench_instances::run(&bins, &loadgen, agents, instances);
    }
    if !matches!(capture, "shared" | "live") {
        bail!("--capture is shared or live, not {capture:?}");
    }
    section("building release binaries and the load generator");
    let bins = build_release()?;
    let loadgen = build_loadgen()?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-load-")
        .tempdir()?;

    section("baseline: 1 agent, the same collection 3 times, one after the other");
    let base = one_run(&bins, &loadgen, &tmp.path().join("base"), 1, 3, capture)?;
    print_outcome(&base);

    section(&format!(
        "{agents} agents, one volatile collection on each, all at once"
    ));
    let load = one_run(
        &bins,
        &loadgen,
        &tmp.path().join("load"),
        agents,
        1,
        capture,
    )?;

    section("bench load: results");
    print_outcome(&load);
    let t1 = median(&base.per_collection_secs);
    let tn = load.rounds_secs.first().copied().unwrap_or(f64::NAN);
    let per = tn / agents as f64;
    println!(
        "baseline                  {t1:.3} s per collection at N=1 (median of 3); {per:.3} s per \
         collection at N={agents} ({tn:.1} s / {agents}); ratio {:.1}",
        t1 / per
    );
    let goals = [
        ("all connected", load.connected == agents),
        (
            "all sealed and verified",
            load.verified == agents && load.requested == agents,
        ),
        ("peak RSS <= 1 GiB", load.peak_rss_kb <= 1024 * 1024),
        ("settled RSS <= 300 MiB", load.settled_rss_kb <= 300 * 1024),
    ];
    for (what, met) in goals {
        println!("goal {what:<26} {}", if met { "met" } else { "NOT met" });
    }
    if goals.iter().any(|g| !g.1) {
        // The logs are the finding: keep them.
        println!("logs and data kept in {}", tmp.keep().display());
    }
    println!("command: cargo xtask bench load --agents {agents} --capture {capture}");
    Ok(())
}
