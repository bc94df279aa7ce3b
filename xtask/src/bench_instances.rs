//! `cargo xtask bench load --instances 2`: several collector instances on one PostgreSQL and
//! one bucket (Garage), the simulated agents spread over them, each instance measured at rest
//! (resident memory, CPU over a minute with every agent connected and heartbeating), then one
//! volatile collection asked of every agent through the last instance only — so most commands
//! cross to the instance the agent is connected to — delivered, sealed and verified. Agents
//! that lose their connection (heartbeats unanswered) are counted from each instance's
//! `/metrics` before and after. Baseline, same run: one instance alone with the same agents.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use cairn_harness::{Bins, Collector};

use crate::bench_load::{
    read_reports, request_all, start_generators, status_kb, sum, verify_all, wait_sealed,
};
use crate::bench_sensor::cpu_seconds;
use crate::procs::section;

const AT_REST: Duration = Duration::from_secs(60);

/// `cairn_agents_connected` of one instance.
fn connected(c: &Collector) -> Result<u64> {
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&c.init.ca_cert)
        .arg(format!("{}/metrics", c.api_url()))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("cairn_agents_connected ")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("no cairn_agents_connected in {}'s /metrics", c.api_url()))
}

struct Instance {
    rss_rest_mib: f64,
    cpu_rest_secs: f64,
    connected: u64,
}

/// Hosts as the shared database knows them (every instance sees all).
fn all_hosts(c: &Collector) -> Result<Vec<String>> {
    let v = c.api()?.get("/api/v1/hosts")?;
    Ok(v.get("hosts")
        .and_then(serde_json::Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(|h| h.get("id").and_then(|i| i.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn one_run(bins: &Bins, loadgen: &Path, dir: &Path, agents: usize, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::env::set_var("CAIRN_TEST_BACKENDS", "postgres+s3");
    let first = Collector::start_in(bins, &dir.join("instance-0"), |_| Ok(()));
    std::env::remove_var("CAIRN_TEST_BACKENDS");
    let mut instances = vec![first?];
    for i in 1..n {
        let peer = instances[0].start_peer(&dir.join(format!("instance-{i}")))?;
        instances.push(peer);
    }
    let refs: Vec<&Collector> = instances.iter().collect();
    let (mut gens, reports) = start_generators(loadgen, &refs, dir, agents, "shared")?;
    let t0 = Instant::now();
    let deadline = Duration::from_secs(120) + Duration::from_millis(200) * agents as u32;
    // Done when every agent that enrolled is connected, or when the count has not moved for
    // a minute (an agent whose enrolment was refused under the ramp's handshake bound does
    // not retry: it is reported, not waited for until the deadline).
    let (mut last, mut since) = (0u64, Instant::now());
    loop {
        for g in &mut gens {
            g.check_alive()?;
        }
        let total: u64 = instances
            .iter()
            .map(connected)
            .collect::<Result<Vec<_>>>()?
            .iter()
            .sum();
        let failed = sum(&read_reports(&reports), "enroll_failed");
        if total != last {
            (last, since) = (total, Instant::now());
        }
        let settled = since.elapsed() > Duration::from_secs(60);
        if total + failed >= agents as u64 || settled || t0.elapsed() > deadline {
            println!(
                "{total} / {agents} agents connected after {:.1} s ({failed} enrolments refused{})",
                t0.elapsed().as_secs_f64(),
                if settled { "; the count settled" } else { "" }
            );
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let before: Vec<u64> = instances.iter().map(connected).collect::<Result<_>>()?;
    // Sessions the generators saw end, before the minute at rest (what is lost after counts).
    let ended_before = sum(&read_reports(&reports), "disconnects");
    let pids: Vec<u32> = instances
        .iter()
        .map(|c| c.pid().ok_or_else(|| anyhow!("an instance has no pid")))
        .collect::<Result<_>>()?;
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_>>()?;
    std::thread::sleep(AT_REST);
    let mut rest = Vec::new();
    for (i, p) in pids.iter().enumerate() {
        rest.push(Instance {
            rss_rest_mib: status_kb(*p, "VmRSS")? as f64 / 1024.0,
            cpu_rest_secs: cpu_seconds(*p)? - cpu0[i],
            connected: connected(&instances[i])?,
        });
    }

    // Every agent's collection, asked of the last instance.
    let asker = instances.last().ok_or_else(|| anyhow!("no instance"))?;
    let hosts = all_hosts(asker)?;
    let t = Instant::now();
    let ids = request_all(asker, &hosts, "bench fleet")?;
    let (rows, _, _) = wait_sealed(&asker.api()?, &ids, Duration::from_secs(3600))?;
    let sealed = rows
        .iter()
        .filter(|r| r.get("status").and_then(|s| s.as_str()) == Some("sealed"))
        .count();
    let secs = t.elapsed().as_secs_f64();
    let (ok, problems) = verify_all(asker, &ids)?;
    let after: Vec<u64> = instances.iter().map(connected).collect::<Result<_>>()?;
    let r = read_reports(&reports);

    println!("\n{n} instance(s), {agents} agents (PostgreSQL + Garage on this machine too)");
    println!(
        "{:<12} {:>10} {:>14} {:>16} {:>14}",
        "instance", "agents", "RSS at rest", "CPU s / 60 s", "agents after"
    );
    for (i, x) in rest.iter().enumerate() {
        println!(
            "{:<12} {:>10} {:>11.0} MiB {:>16.2} {:>14}",
            i, x.connected, x.rss_rest_mib, x.cpu_rest_secs, after[i]
        );
    }
    let net: i64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| *b as i64 - *a as i64)
        .sum();
    // Every session that ended counts, even if its agent reconnected at once.
    let lost = sum(&r, "disconnects").saturating_sub(ended_before) as i64;
    println!(
        "commands asked of instance {}: {}; sealed {sealed}; verified {}; problems {}; {secs:.1} s to all final",
        n - 1,
        ids.len(),
        ok.len(),
        problems.len()
    );
    println!(
        "sessions ended during the run (heartbeats unanswered, streams reset): {lost} ({net} fewer connected at the end); generators: {} enrolled, {} welcomed",
        sum(&r, "enrolled"),
        sum(&r, "connected")
    );
    let max_rss = rest.iter().map(|x| x.rss_rest_mib).fold(0.0, f64::max);
    println!(
        "goal: 0 lost — {}; <= 1 GiB RSS per instance — {} (max {max_rss:.0} MiB)",
        if lost <= 0 { "met" } else { "NOT met" },
        if max_rss <= 1024.0 { "met" } else { "NOT met" }
    );
    drop(gens);
    Ok(())
}

pub fn run(bins: &Bins, loadgen: &Path, agents: usize, instances: usize) -> Result<()> {
    if instances < 1 {
        bail!("--instances must be at least 1");
    }
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-fleet-")
        .tempdir()?;
    section(&format!("baseline: 1 instance, {agents} agents"));
    one_run(bins, loadgen, &tmp.path().join("one"), agents, 1)?;
    section(&format!(
        "{instances} instances, {agents} agents spread over them"
    ));
    one_run(bins, loadgen, &tmp.path().join("many"), agents, instances)?;
    println!("command: cargo xtask bench load --agents {agents} --instances {instances}");
    Ok(())
}
