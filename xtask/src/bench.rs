//! `cargo xtask bench ingest`: how fast a file goes from the host into the collector, sealed,
//! against a shell pipeline doing the same work (read, hash, compress, decompress, hash).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use cairn_harness::{collector_with_agent_in, is_finished, items, run, Bins};

use crate::procs::{build_release, ensure_tools, section};

const MIB: u64 = 1 << 20;

/// xoshiro256** — fast and good enough for incompressible test data.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
}

/// Writes the benchmark file: first half log-like text, second half random bytes.
/// Returns its SHA-256.
pub(crate) fn make_file(path: &Path, size: u64) -> Result<String> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(4 << 20, f);
    let mut h = Sha256::new();
    let mut rng = Rng::new(0x5EED_CA12);
    let half = size / 2;
    let mut written = 0u64;
    let users = ["root", "admin", "ubuntu", "ec2-user", "deploy", "www-data"];
    let units = ["sshd", "sudo", "kernel", "systemd", "cron", "containerd"];
    let mut line = String::with_capacity(256);
    let mut ts: u64 = 1_714_560_000_000;
    while written < half {
        use std::fmt::Write as _;
        let r = rng.next();
        ts += r % 50;
        line.clear();
        let (secs, ms) = (ts / 1000, ts % 1000);
        let _ = writeln!(
            line,
            "{}.{ms:03} ip-10-0-{}-{} {}[{}]: session {} opened for user {} from 10.{}.{}.{} port {} bytes={}",
            secs,
            (r >> 8) % 256,
            (r >> 16) % 256,
            units[(r % 6) as usize],
            1000 + (r >> 20) % 60000,
            (r >> 24) % 100_000,
            users[((r >> 40) % 6) as usize],
            (r >> 32) % 256,
            (r >> 44) % 256,
            (r >> 52) % 256,
            1024 + (r >> 28) % 60000,
            (r >> 36) % 1_000_000,
        );
        let take = usize::try_from((half - written).min(line.len() as u64))?;
        let bytes = &line.as_bytes()[..take];
        w.write_all(bytes)?;
        h.update(bytes);
        written += take as u64;
    }
    let mut buf = vec![0u8; 1 << 20];
    while written < size {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let take = usize::try_from((size - written).min(buf.len() as u64))?;
        w.write_all(&buf[..take])?;
        h.update(&buf[..take]);
        written += take as u64;
    }
    w.flush()?;
    w.get_ref().sync_all()?;
    Ok(hex::encode(h.finalize()))
}

/// One cairn run on a fresh collector and agent (so nothing is deduplicated from a previous run):
/// wall time from the POST to `sealed`.
fn cairn_once(bins: &Bins, dir: &Path, file: &Path, want_sha: &str) -> Result<Duration> {
    // `_agent` (not `_`): the agent must live until the end of the run.
    let (collector, _agent, host_id) = collector_with_agent_in(bins, dir, |_| Ok(()))?;
    let api = collector.api()?;
    let body = json!({
        "host": host_id,
        "profile": "file",
        "reason": "bench ingest",
        "paths": [file.to_string_lossy()],
    });
    let start = Instant::now();
    let resp = api.post("/api/v1/collections", &body)?;
    let id = resp
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("POST /api/v1/collections answered without an id: {resp}"))?
        .to_string();
    let deadline = start + Duration::from_secs(1800);
    let collection = loop {
        let v = api.get(&format!("/api/v1/collections/{id}"))?;
        if is_finished(v.get("status").and_then(Value::as_str).unwrap_or("")) {
            break v;
        }
        if Instant::now() > deadline {
            bail!("collection {id} not finished after 30 min: {v}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    if collection.get("status").and_then(Value::as_str) != Some("sealed") {
        bail!("collection {id} did not seal: {collection:#}");
    }
    let items = items(&collection);
    let got: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("sha256").and_then(Value::as_str))
        .collect();
    if !got.contains(&want_sha) {
        bail!("no sealed item has the file's SHA-256 {want_sha}: {collection:#}");
    }
    Ok(elapsed)
}

fn baseline_cmd(file: &Path) -> String {
    format!(
        "cat {} | tee >(openssl dgst -sha256 >/dev/null) | zstd -1 -q | zstd -d -q | openssl dgst -sha256",
        file.display()
    )
}

fn baseline_once(file: &Path) -> Result<Duration> {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &baseline_cmd(file)]);
    let start = Instant::now();
    let out = run(cmd, Duration::from_secs(1800))?.ok()?;
    let elapsed = start.elapsed();
    if !out.stdout.contains("SHA2-256") && !out.stdout.contains("SHA256") {
        bail!("unexpected baseline output: {}", out.stdout.trim());
    }
    Ok(elapsed)
}

/// Writes `len` random (incompressible) bytes into `path` at `offset`, creating the file if
/// needed and keeping what is before `offset` (a sparse hole stays a hole).
pub fn make_random_file(path: &Path, offset: u64, len: u64, seed: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut w = BufWriter::with_capacity(4 << 20, f);
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let take = usize::try_from(left.min(buf.len() as u64))?;
        w.write_all(&buf[..take])?;
        left -= take as u64;
    }
    w.flush()?;
    Ok(())
}

pub fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

pub fn ingest(size_mib: u64, backend: Option<&str>) -> Result<()> {
    if size_mib < 2 {
        bail!("--size-mib must be at least 2");
    }
    section("tools for the baseline");
    ensure_tools(&[
        ("zstd", "zstd"),
        ("openssl", "openssl"),
        ("tee", "coreutils"),
    ])?;
    section("building release binaries");
    let bins = build_release()?;

    let tmp = tempfile::Builder::new().prefix("cairn-bench-").tempdir()?;
    let file = tmp.path().join("ingest.bin");
    let size = size_mib * MIB;
    section(&format!(
        "making {size_mib} MiB test file (half log text, half random)"
    ));
    let t = Instant::now();
    let sha = make_file(&file, size)?;
    println!(
        "{} in {:.1} s, sha256 {sha}",
        file.display(),
        t.elapsed().as_secs_f64()
    );

    // The collectors' back ends: the embedded default, and the one asked for (the harness
    // starts PostgreSQL and Garage on loopback and gives each collector its own database and
    // prefix).
    let mut configs: Vec<(String, String)> = vec![("default".into(), String::new())];
    if let Some(b) = backend {
        let sel = b.replace(',', "+");
        configs.push((sel.clone(), sel));
    }
    let mut best: Vec<Duration> = vec![Duration::MAX; configs.len()];
    let mut base_best = Duration::MAX;
    for run in 1..=2 {
        for (i, (name, sel)) in configs.iter().enumerate() {
            section(&format!("run {run}/2: cairn on {name} (request → sealed)"));
            std::env::set_var("CAIRN_TEST_BACKENDS", sel);
            let d = cairn_once(
                &bins,
                &tmp.path().join(format!("stack-{run}-{i}")),
                &file,
                &sha,
            );
            std::env::remove_var("CAIRN_TEST_BACKENDS");
            let d = d?;
            println!("{:.2} s, {:.0} MB/s", d.as_secs_f64(), mbps(size, d));
            best[i] = best[i].min(d);
        }
        section(&format!("run {run}/2: baseline shell pipeline"));
        let d = baseline_once(&file)?;
        println!("{:.2} s, {:.0} MB/s", d.as_secs_f64(), mbps(size, d));
        base_best = base_best.min(d);
    }

    section("bench ingest: results (best of 2)");
    println!("{:<16} {:>10} {:>10}", "", "seconds", "MB/s");
    for ((name, _), d) in configs.iter().zip(&best) {
        println!(
            "{:<16} {:>10.2} {:>10.0}",
            format!("cairn {name}"),
            d.as_secs_f64(),
            mbps(size, *d)
        );
    }
    println!(
        "{:<16} {:>10.2} {:>10.0}",
        "baseline",
        base_best.as_secs_f64(),
        mbps(size, base_best)
    );
    let ratio = base_best.as_secs_f64() / best[0].as_secs_f64().max(1e-9);
    println!("ratio baseline_time / cairn_time = {ratio:.2} (goal >= 1.0)");
    if let (Some((name, _)), Some(d)) = (configs.get(1), best.get(1)) {
        let r = best[0].as_secs_f64() / d.as_secs_f64().max(1e-9);
        println!(
            "ratio {name} throughput / default throughput = {r:.2} (goal >= 0.8; PostgreSQL and Garage share this machine's cores with the collector and the agent)"
        );
    }
    println!("\ndata: {size_mib} MiB, first half log-like text, second half random bytes");
    println!("cairn: POST /api/v1/collections {{\"profile\":\"file\",\"paths\":[FILE]}}, polled every 50 ms until sealed; fresh collector+agent per run");
    println!("baseline: bash -c '{}'", baseline_cmd(Path::new("FILE")));
    match backend {
        Some(b) => {
            println!("command: cargo xtask bench ingest --size-mib {size_mib} --backend {b}")
        }
        None => println!("command: cargo xtask bench ingest --size-mib {size_mib}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_file_has_the_size_and_hash_it_reports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let sha = make_file(&p, 3 * MIB + 5).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() as u64, 3 * MIB + 5);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
        // First half is text lines, second half is not.
        assert!(bytes[..1000].iter().all(|b| b.is_ascii()));
        assert!(!bytes[bytes.len() - 1000..].iter().all(|b| b.is_ascii()));
    }
}
