//! Fleet profiles and outlier scores at scale, for `cargo xtask bench fleet` (issue #17):
//! `HOSTS` hosts in `GROUPS` Auto Scaling groups (over four VPCs), `EVENTS` events over the
//! day before `now` in the collector's own SQLite store; the full report (groups, profiles,
//! scores) timed, then an hour of new events and the report recomputed. Baseline, same run,
//! same database: the plain stacking query a responder would write by hand, `SELECT host,
//! exe, COUNT(*) … GROUP BY host, exe` over the same window (one of the report's four
//! feature reads, no grouping, no scoring). Planted outliers (one host in each of five
//! groups runs a payload and connects to an odd port) must be exactly the hosts flagged.
//!
//! `bench_fleet --dir DIR [--hosts N] [--groups G] [--events E]` prints one JSON object.

use anyhow::{bail, Context, Result};
use cairn_collector::fleet::Fleet;
use cairn_collector::storage::sqlite::Sqlite;
use cairn_collector::storage::{HostStore, TimelineStore};
use cairn_collector::timeline::Event;
use cairn_protocol::manifest::{CloudIdentity, HostIdentity};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2026-12-01T00:00:00Z
const NOW_NS: i64 = 1_796_083_200_000_000_000;
const OUTLIER_GROUPS: usize = 5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn host_id(i: usize) -> String {
    format!("5f0c2a7e-1b3d-4c5e-8f90-{i:012x}")
}

fn enroll(db: &Sqlite, i: usize, group: usize) -> Result<()> {
    let id = host_id(i);
    db.insert_enrolled_host(&id, &format!("app{group}-{i}"), &format!("cert-{i}"))?;
    let ident = HostIdentity {
        hostname: format!("app{group}-{i}"),
        cloud: Some(CloudIdentity {
            provider: "aws".into(),
            instance_id: Some(format!("i-{i:017x}")),
            account_id: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
            network_id: Some(format!("vpc-{:04}", group % 4)),
            scaling_group: Some(format!("app{group}")),
            ..Default::default()
        }),
        ..Default::default()
    };
    db.update_host_identity(&id, &ident, "bench")?;
    Ok(())
}

/// `n` events of one host of `group` between `from_ns` and `from_ns + span_ns`: its group's
/// workload, what every host does, and some per-host noise.
fn events(
    rng: &mut Rng,
    group: usize,
    host: usize,
    outlier: bool,
    n: usize,
    from_ns: i64,
    span_ns: i64,
) -> Vec<Event> {
    let step = (span_ns / n.max(1) as i64).max(1);
    (0..n)
        .map(|k| {
            let t = from_ns + k as i64 * step;
            let roll = rng.below(100);
            let mut e = if outlier && k % 1000 == 7 {
                let mut e = Event::new(t, "ebpf", "process_exec", "exec /tmp/.x/payload");
                e.exe = Some("/tmp/.x/payload".into());
                e.parent_exe = Some(format!("/opt/app{group}/bin/server"));
                e
            } else if outlier && k % 1000 == 9 {
                let mut e = Event::new(t, "ebpf", "tcp_connect", "connect 198.51.100.7:4444");
                e.dst_addr = Some("198.51.100.7".into());
                e.dst_port = Some(4444);
                e
            } else if roll < 60 {
                let exe = match rng.below(4) {
                    0 => "/bin/sh".to_string(),
                    1 => "/usr/bin/python3".to_string(),
                    w => format!("/opt/app{group}/bin/worker{w}"),
                };
                let mut e = Event::new(t, "ebpf", "process_exec", format!("exec {exe}"));
                e.parent_exe = Some(format!("/opt/app{group}/bin/server"));
                e.exe = Some(exe);
                e.pid = Some(1000 + k as i64);
                e
            } else if roll < 95 {
                let mut e = Event::new(t, "ebpf", "tcp_connect", "connect");
                let (addr, port) = match rng.below(3) {
                    0 => ("10.0.0.2".to_string(), 53),
                    1 => (format!("10.{group}.0.5"), 5432),
                    // A spread of service addresses: common, but not every host hits each.
                    _ => (format!("10.{group}.1.{}", rng.below(4)), 443),
                };
                e.dst_addr = Some(addr);
                e.dst_port = Some(port);
                e
            } else {
                let mut e = Event::new(t, "auth.log", "ssh_login", "Accepted publickey");
                e.user = Some("deploy".into());
                e
            };
            e.dedup = (host as i64) << 32 | k as i64 | (from_ns & 0xffff) << 48;
            e
        })
        .collect()
}

/// A `/proc/self/status` field in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn run(dir: &Path, hosts: usize, groups: usize, total: usize) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let db = Sqlite::open(&dir.join("cairn.db"))?;
    let group_of = |i: usize| i % groups;
    // The first host of each of the first groups is the planted outlier.
    let outlier = |i: usize| i < OUTLIER_GROUPS.min(groups);
    for i in 0..hosts {
        enroll(&db, i, group_of(i))?;
    }
    let per_host = total / hosts;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for i in 0..hosts {
        let evs = events(
            &mut rng,
            group_of(i),
            i,
            outlier(i),
            per_host,
            NOW_NS - 24 * HOUR_NS,
            24 * HOUR_NS,
        );
        db.insert_timeline(&host_id(i), None, &evs)?;
    }
    let fill_s = t.elapsed().as_secs_f64();
    eprintln!("filled {} events in {fill_s:.1} s", per_host * hosts);

    let fleet = Fleet::default();
    let rss_before = status_kb("VmRSS");
    let t = Instant::now();
    let r = fleet.report(&db, NOW_NS)?;
    let full_s = t.elapsed().as_secs_f64();
    let rss_after = status_kb("VmRSS");
    let mut flagged: Vec<String> = r
        .hosts
        .iter()
        .filter(|h| h.outlier)
        .map(|h| h.host_id.clone())
        .collect();
    flagged.sort();
    let mut planted: Vec<String> = (0..hosts).filter(|&i| outlier(i)).map(host_id).collect();
    planted.sort();

    // The baseline: one hand-written stacking query over the same window.
    let conn = rusqlite::Connection::open(dir.join("cairn.db"))?;
    let t = Instant::now();
    let mut q = conn.prepare(
        "SELECT host, exe, COUNT(*) FROM timeline WHERE kind = 'process_exec' AND time_ns >= ?1
         AND time_ns <= ?2 AND exe IS NOT NULL GROUP BY host, exe",
    )?;
    let rows = q
        .query_map([NOW_NS - 24 * HOUR_NS, NOW_NS], |r| r.get::<_, i64>(2))?
        .count();
    let base_s = t.elapsed().as_secs_f64();

    // An hour of new events, then the scores again.
    let t = Instant::now();
    for i in 0..hosts {
        let evs = events(
            &mut rng,
            group_of(i),
            i,
            outlier(i),
            (per_host / 24).max(1),
            NOW_NS,
            HOUR_NS,
        );
        db.insert_timeline(&host_id(i), None, &evs)?;
    }
    let hour_fill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r2 = fleet.report(&db, NOW_NS + HOUR_NS)?;
    let recompute_s = t.elapsed().as_secs_f64();
    let still: usize = r2.hosts.iter().filter(|h| h.outlier).count();
    if flagged != planted {
        bail!(
            "the report flagged {} host(s), {} were planted: {flagged:?} vs {planted:?}",
            flagged.len(),
            planted.len()
        );
    }
    Ok(json!({
        "hosts": hosts, "groups": r.groups.len(), "events": per_host * hosts,
        "fill_s": fill_s, "full_report_s": full_s, "recompute_after_hour_s": recompute_s,
        "hour_events": (per_host / 24).max(1) * hosts, "hour_fill_s": hour_fill_s,
        "baseline_stack_s": base_s, "baseline_rows": rows,
        "ratio_baseline_over_cairn": base_s / recompute_s,
        "flagged": flagged.len(), "planted": planted.len(), "flagged_after_hour": still,
        "rss_kb_before_report": rss_before, "rss_kb_after_report": rss_after,
        "peak_rss_kb": status_kb("VmHWM"), "truncated": r.truncated,
        "db_bytes": std::fs::metadata(dir.join("cairn.db"))?.len(),
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let (mut hosts, mut groups, mut events) = (1000usize, 20usize, 10_000_000usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context("a value after the flag");
        match a.as_str() {
            "--dir" => dir = Some(val()?.clone()),
            "--hosts" => hosts = val()?.parse()?,
            "--groups" => groups = val()?.parse()?,
            "--events" => events = val()?.parse()?,
            other => bail!("bench_fleet: unknown argument {other:?}"),
        }
    }
    let dir = dir.context("bench_fleet --dir DIR [--hosts N] [--groups G] [--events E]")?;
    if hosts == 0 || groups == 0 || groups > hosts {
        bail!("bench_fleet: need 0 < groups <= hosts");
    }
    let out = run(Path::new(&dir), hosts, groups, events)?;
    println!("{out}");
    Ok(())
}
