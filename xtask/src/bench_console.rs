//! `cargo xtask bench console`: the console's timeline page against the JSON API, on the data
//! set of `bench timeline` (10 million events, 20 hosts over a day) in a real collector.
//!
//! The collector's database is filled by the release example `bench_timeline --fill` between
//! `init` and `serve`; then, alternating in the same run, the console's `/timeline` (results,
//! facets and histogram rendered to HTML on the server, signed in with a one-time link) and
//! `GET /api/v1/timeline` (results and facets as JSON, the baseline) for one host and one hour,
//! and for the whole fleet over 24 hours. p50 and p99 of each, and the ratio HTML/JSON.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use cairn_harness::{Api, Collector, ConsoleClient};

use crate::procs::{build_release, section};

const HOUR_NS: i64 = 3_600_000_000_000;

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn p(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

struct Timing {
    html: Vec<Duration>,
    json: Vec<Duration>,
}

pub fn run(events: u64, runs: u32) -> Result<()> {
    let bins = build_release()?;
    let example = crate::procs::build_release_example("cairn-collector", "bench_timeline")?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-console-")
        .tempdir()?;

    section(&format!("fill a collector's database with {events} events"));
    let mut filled = Value::Null;
    let started = Instant::now();
    let collector = Collector::start_in(&bins, &tmp.path().join("collector"), |data| {
        let mut cmd = std::process::Command::new(&example);
        cmd.arg("--fill")
            .arg(data.join("cairn.db"))
            .args(["--events", &events.to_string()]);
        let out = cairn_harness::run(cmd, Duration::from_secs(7200))?.ok()?;
        filled = out
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| anyhow!("bench_timeline --fill printed no JSON: {}", out.stdout))?;
        Ok(())
    })?;
    println!("filled in {:.0?}: {filled}", started.elapsed());
    let from_ns = filled["from_ns"].as_i64().context("fill: from_ns")?;
    let to_ns = filled["to_ns"].as_i64().context("fill: to_ns")?;

    let api = Api::new(
        &collector.api_url(),
        &collector.init.admin_token,
        &collector.init.ca_cert,
    )?;
    let mut console = ConsoleClient::new(&collector.api_url(), &collector.init.ca_cert)?;
    let signed = console.sign_in(&collector.init.admin_token)?;
    if console.cookie.is_none() {
        bail!("could not sign in to the console: {signed:?}");
    }

    let mut host_hour = Timing {
        html: Vec::new(),
        json: Vec::new(),
    };
    let mut fleet_day = Timing {
        html: Vec::new(),
        json: Vec::new(),
    };
    section(&format!(
        "{runs} runs of each: one host over one hour, the fleet over 24 hours"
    ));
    let (fleet_from, fleet_to) = (rfc3339(from_ns), rfc3339(to_ns));
    for i in 0..runs {
        let host = format!("web-{:02}", (i * 7) % 20);
        let start = from_ns + i64::from(i % 23) * HOUR_NS;
        let (from, to) = (rfc3339(start), rfc3339(start + HOUR_NS));
        let html_path = format!("/timeline?query=host%3A{host}&from={from}&to={to}");
        let json_path = format!("/api/v1/timeline?host={host}&from={from}&to={to}&limit=100");
        let fleet_html = format!("/timeline?from={fleet_from}&to={fleet_to}");
        let fleet_json = format!("/api/v1/timeline?from={fleet_from}&to={fleet_to}&limit=100");
        // Alternate which goes first, so neither always finds the cache warm.
        for (html_first, timing, html, json) in [
            (i % 2 == 0, &mut host_hour, &html_path, &json_path),
            (i % 2 == 1, &mut fleet_day, &fleet_html, &fleet_json),
        ] {
            let mut one_html = || -> Result<Duration> {
                let t = Instant::now();
                let page = console.get(html)?;
                let d = t.elapsed();
                if page.status != 200 || !page.body.contains("events") {
                    bail!(
                        "console {html}: HTTP {}: {}",
                        page.status,
                        page.body.chars().take(500).collect::<String>()
                    );
                }
                Ok(d)
            };
            let one_json = || -> Result<Duration> {
                let t = Instant::now();
                let v = api.get(json)?;
                let d = t.elapsed();
                if v["events"].as_array().is_none_or(|e| e.is_empty()) {
                    bail!("API {json}: no events: {v}");
                }
                Ok(d)
            };
            if html_first {
                timing.html.push(one_html()?);
                timing.json.push(one_json()?);
            } else {
                timing.json.push(one_json()?);
                timing.html.push(one_html()?);
            }
        }
        eprint!(".");
    }
    eprintln!();
    section("results");
    println!(
        "{} events, 20 hosts over 24 h; console /timeline (page of 100, facets, histogram, HTML) vs GET /api/v1/timeline (page of 100, facets, JSON), {runs} alternating runs each",
        filled["events"]
    );
    for (name, t, goal) in [
        ("one host, one hour", &mut host_hour, 100.0),
        ("the fleet, 24 hours", &mut fleet_day, 1000.0),
    ] {
        t.html.sort();
        t.json.sort();
        let (h50, j50) = (p(&t.html, 0.5), p(&t.json, 0.5));
        println!(
            "  {name:<20} console p50 {h50:>8.1} ms  p99 {:>8.1} ms | JSON API p50 {j50:>8.1} ms  p99 {:>8.1} ms | ratio {:.2} (goal ≤ 1.2) | p50 goal ≤ {goal:.0} ms: {}",
            p(&t.html, 0.99),
            p(&t.json, 0.99),
            h50 / j50,
            if h50 <= goal { "met" } else { "not met" }
        );
    }
    drop(collector);
    Ok(())
}
