//! `cargo xtask bench containment`: how fast an isolation cuts a host off, and what it costs
//! the evidence channel.
//!
//! A collector in the root network namespace, the agent in a "host" namespace, a UDP sink in a
//! "peer" namespace that the host sends a datagram every millisecond. Each round: `POST
//! …/isolation`, then (1) the time to the first dropped datagram — the last one the peer got,
//! plus the send interval — and (2) the time to the agent's confirmation (status `done`);
//! then release. Baseline for (1): the same ruleset applied by hand with `nft -f` in the host
//! namespace, timed the same way. Then a 512 MiB file collection sealed isolated and not, in
//! the same run (alternating, best of 3 each): the ratio is what isolation costs the channel
//! (goal ≥ 0.95).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::json;

use cairn_harness::netns::Topology;
use cairn_harness::{run, Agent, Collector, KillOnDrop};

use crate::procs::{build_release, ensure_tools, section};

const SINK_PORT: u16 = 7100;
const ROUNDS: usize = 10;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The peer's sink: appends the arrival time of every datagram to `log`.
fn sink(t: &Topology, log: &Path) -> Result<KillOnDrop> {
    let script = format!(
        "import socket,time\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(({:?},{SINK_PORT}))\nf=open({:?},'a',buffering=1)\nwhile True:\n  u.recv(64);f.write('%.6f\\n'%time.time())\n",
        t.peer_ip,
        log.display().to_string()
    );
    let mut c = Topology::command(&t.peer_ns, "python3");
    c.args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(KillOnDrop(c.spawn().context("starting the sink")?))
}

/// The host's sender: a datagram to the sink every millisecond (errors ignored: isolated,
/// sendto fails with EPERM).
fn sender(t: &Topology) -> Result<KillOnDrop> {
    let script = format!(
        "import socket,time\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nwhile True:\n  try: u.sendto(b'x',({:?},{SINK_PORT}))\n  except OSError: pass\n  time.sleep(0.001)\n",
        t.peer_ip
    );
    let mut c = Topology::command(&t.host_ns, "python3");
    c.args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(KillOnDrop(c.spawn().context("starting the sender")?))
}

fn last_arrival(log: &Path) -> Option<f64> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<f64>().ok())
}

/// Waits until nothing arrived for 300 ms; the time of the first datagram not delivered.
fn first_drop(log: &Path) -> Result<f64> {
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(last) = last_arrival(log) {
            if now_s() - last > 0.3 {
                return Ok(last + 0.001);
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("datagrams still arrive 30 s after the isolation was asked for");
        }
    }
}

fn arriving_again(log: &Path) -> Result<()> {
    let start = Instant::now();
    while last_arrival(log).is_none_or(|l| now_s() - l > 0.05) {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("datagrams do not arrive again after release");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn nft(t: &Topology, stdin: &str) -> Result<()> {
    let mut c = Topology::command(&t.host_ns, "nft");
    c.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = c.spawn()?;
    if let Some(mut i) = child.stdin.take() {
        std::io::Write::write_all(&mut i, stdin.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("nft -f failed");
    }
    Ok(())
}

pub fn run_bench() -> Result<()> {
    section("tools");
    ensure_tools(&[
        ("nft", "nftables"),
        ("python3", "python3"),
        ("nsenter", "util-linux"),
    ])?;
    section("building release binaries");
    let bins = build_release()?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-contain-")
        .tempdir()?;
    let t = Topology::create("bench")?;
    let c = Collector::start_at(&bins, &tmp.path().join("collector"), &t.root_ip, |_| Ok(()))?;
    let mut agent = Agent::enroll_in(&c, &tmp.path().join("agent"))?;
    agent.run_in_netns(&t.host_ns)?;
    let host = agent.wait_connected(&c, Duration::from_secs(60))?;
    let api = c.api()?;
    let log = tmp.path().join("arrivals.log");
    let _sink = sink(&t, &log)?;
    let _sender = sender(&t)?;
    arriving_again(&log)?;

    let (mut to_drop, mut to_confirm, mut by_hand) = (Vec::new(), Vec::new(), Vec::new());
    let mut rules = String::new();
    for round in 1..=ROUNDS {
        let asked = now_s();
        let row = api.post(
            &format!("/api/v1/hosts/{host}/isolation"),
            &json!({"reason": format!("bench containment {round}")}),
        )?;
        let id = row["id"].as_str().unwrap_or_default().to_string();
        let confirmed = loop {
            let r = api.get(&format!("/api/v1/containment/{id}"))?;
            match r["status"].as_str() {
                Some("done") => break now_s(),
                Some("failed") => bail!("isolation failed: {r}"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
            if now_s() - asked > 60.0 {
                bail!("isolation not confirmed in 60 s: {r}");
            }
        };
        let dropped = first_drop(&log)?;
        to_drop.push((dropped - asked) * 1000.0);
        to_confirm.push((confirmed - asked) * 1000.0);
        if rules.is_empty() {
            let mut l = Topology::command(&t.host_ns, "nft");
            l.args(["list", "table", "inet", "cairn_isolation"]);
            rules = run(l, Duration::from_secs(10))?.ok()?.stdout;
        }
        let rel = api.delete(
            &format!("/api/v1/hosts/{host}/isolation"),
            &json!({"reason": "bench containment: release"}),
        )?;
        let id = rel["id"].as_str().unwrap_or_default().to_string();
        while api.get(&format!("/api/v1/containment/{id}"))?["status"] != "done" {
            std::thread::sleep(Duration::from_millis(10));
        }
        arriving_again(&log)?;
        // Baseline: the same table by hand.
        let asked = now_s();
        nft(
            &t,
            &format!("table inet cairn_isolation\ndelete table inet cairn_isolation\n{rules}"),
        )?;
        let dropped = first_drop(&log)?;
        by_hand.push((dropped - asked) * 1000.0);
        nft(&t, "delete table inet cairn_isolation\n")?;
        arriving_again(&log)?;
        println!(
            "round {round}: first drop {:.0} ms, confirmed {:.0} ms; nft -f by hand: first drop {:.0} ms",
            to_drop[round - 1],
            to_confirm[round - 1],
            by_hand[round - 1]
        );
    }

    section("the evidence channel, isolated and not (512 MiB file, alternating, best of 3 each)");
    let file = tmp.path().join("ingest.bin");
    crate::bench::make_file(&file, 512 << 20)?;
    let paths = [file.as_path()];
    let once = || -> Result<f64> {
        let start = Instant::now();
        let col = c.collect_wait(
            &host,
            "file",
            "bench containment: ingest",
            &paths,
            Duration::from_secs(600),
        )?;
        if col["status"] != "sealed" {
            bail!("collection not sealed: {}", col["status"]);
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let wait_done = |id: &str| -> Result<()> {
        while api.get(&format!("/api/v1/containment/{id}"))?["status"] != "done" {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    let (mut open, mut isolated) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        open = open.min(once()?);
        let row = api.post(
            &format!("/api/v1/hosts/{host}/isolation"),
            &json!({"reason": "bench containment: ingest"}),
        )?;
        wait_done(row["id"].as_str().unwrap_or_default())?;
        isolated = isolated.min(once()?);
        let row = api.delete(
            &format!("/api/v1/hosts/{host}/isolation"),
            &json!({"reason": "bench containment: ingest done"}),
        )?;
        wait_done(row["id"].as_str().unwrap_or_default())?;
    }

    section("bench containment: results");
    let (d, cf, h) = (p50(&mut to_drop), p50(&mut to_confirm), p50(&mut by_hand));
    println!("POST isolation → first dropped datagram at the peer: p50 {d:.0} ms (goal ≤ 200 ms)");
    println!(
        "POST isolation → agent's confirmation (round trip proven): p50 {cf:.0} ms (goal ≤ 200 ms)"
    );
    println!("nft -f of the same table by hand → first drop: p50 {h:.0} ms; ratio cairn / by hand = {:.1}", d / h.max(0.001));
    println!("512 MiB file sealed (best of 3): not isolated {open:.2} s, isolated {isolated:.2} s; ratio open/isolated = {:.2} (goal ≥ 0.95)", open / isolated.max(1e-9));
    println!(
        "{ROUNDS} rounds; datagrams every 1 ms host → peer; times from CLOCK_REALTIME, one machine"
    );
    println!("command: cargo xtask bench containment");
    Ok(())
}
