//! `cargo xtask bench disk`: imaging a block device with cairn (read, SHA-256 per chunk and of
//! the whole device, zstd, framed to an offline directory) against `dd bs=4M | openssl dgst
//! -sha256` on the same loop device in the same run. Two devices: half zeros and half random
//! (zero chunks should make cairn at least as fast as the baseline), and fully random (the
//! worst case: every byte hashed twice and offered to zstd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::bench::{make_random_file, mbps};
use crate::procs::{cargo, ensure_tools, run_inherit, section, target_dir};

const MIB: u64 = 1 << 20;

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Result<Loop> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]).arg(file);
        let out = cairn_harness::run(cmd, Duration::from_secs(60))?.ok()?;
        Ok(Loop(out.stdout.trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn baseline_cmd(dev: &str) -> String {
    format!("dd if={dev} bs=4M status=none | openssl dgst -sha256")
}

/// `dd | openssl`: (time, the hex digest it printed).
fn baseline_once(dev: &str) -> Result<(Duration, String)> {
    let mut cmd = Command::new("bash");
    cmd.args(["-o", "pipefail", "-c", &baseline_cmd(dev)]);
    let start = Instant::now();
    let out = cairn_harness::run(cmd, Duration::from_secs(1800))?.ok()?;
    let d = start.elapsed();
    let digest = out
        .stdout
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("openssl printed nothing"))?
        .to_string();
    Ok((d, digest))
}

/// `cairn-agent capture disk --out` into tmpfs (so no disk write or fsync is timed):
/// (time, the manifest's SHA-256, bytes stored).
fn cairn_once(agent: &Path, dev: &str, scratch: &Path) -> Result<(Duration, String, u64)> {
    let out = scratch.join("capture");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(agent);
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--state-dir")
        .arg(scratch.join("no-state"))
        .args(["capture", "disk", "--device", dev, "--out"])
        .arg(&out);
    let start = Instant::now();
    cairn_harness::run(cmd, Duration::from_secs(1800))?.ok()?;
    let d = start.elapsed();
    let mut sha = None;
    let mut stored = 0;
    for e in std::fs::read_dir(out.join("items"))? {
        let p = e?.path();
        let name = p.to_string_lossy().into_owned();
        if name.ends_with(".manifest.json") {
            let m: Value = serde_json::from_slice(&std::fs::read(&p)?)?;
            sha = m["sha256"].as_str().map(str::to_string);
        } else if name.ends_with(".cairn") {
            stored += std::fs::metadata(&p)?.len();
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok((
        d,
        sha.ok_or_else(|| anyhow!("capture wrote no manifest"))?,
        stored,
    ))
}

struct Result2 {
    label: &'static str,
    cairn: Duration,
    base: Duration,
    stored: u64,
    goal: f64,
}

pub fn run(size_mib: u64) -> Result<()> {
    if size_mib < 8 || size_mib % 2 == 1 {
        bail!("--size-mib must be an even number of at least 8");
    }
    section("tools for the baseline");
    ensure_tools(&[
        ("losetup", "mount"),
        ("dd", "coreutils"),
        ("openssl", "openssl"),
    ])?;
    section("cargo build --release -p cairn-agent");
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "cairn-agent",
        "--bin",
        "cairn-agent",
    ]);
    run_inherit(build)?;
    let agent = target_dir().join("release/cairn-agent");

    // Images and output on tmpfs when there is one: the bench measures the pipeline, not the
    // machine's disk.
    let base = ["/dev/shm", "/tmp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bench-disk-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a directory in {}", base.display()))?;
    let size = size_mib * MIB;
    section(&format!(
        "making two {size_mib} MiB images in {}",
        tmp.path().display()
    ));
    let half_zero = tmp.path().join("half-zero.img");
    {
        let f = std::fs::File::create(&half_zero)?;
        f.set_len(size / 2)?;
    }
    make_random_file(&half_zero, size / 2, size / 2, 0xD15C)?;
    let random = tmp.path().join("random.img");
    make_random_file(&random, 0, size, 0xD15D)?;

    let mut results = Vec::new();
    for (label, img, goal) in [
        ("half zeros, half random", &half_zero, 1.0),
        ("fully random", &random, 0.9),
    ] {
        let dev = Loop::attach(img)?;
        section(&format!("{label}: {} ({size_mib} MiB)", dev.0));
        // Warm the page cache once so both tools read the same cached device.
        baseline_once(&dev.0)?;
        let mut best_c = Duration::MAX;
        let mut best_b = Duration::MAX;
        let mut stored = 0;
        for run in 1..=2 {
            let (d, sha, s) = cairn_once(&agent, &dev.0, tmp.path())?;
            println!(
                "run {run}: cairn    {:.2} s {:>6.0} MB/s  stored {} MiB",
                d.as_secs_f64(),
                mbps(size, d),
                s / MIB
            );
            let (b, digest) = baseline_once(&dev.0)?;
            println!(
                "run {run}: baseline {:.2} s {:>6.0} MB/s",
                b.as_secs_f64(),
                mbps(size, b)
            );
            if sha != digest {
                bail!(
                    "cairn's SHA-256 {sha} differs from openssl's {digest} for {}",
                    dev.0
                );
            }
            best_c = best_c.min(d);
            best_b = best_b.min(b);
            stored = s;
        }
        results.push(Result2 {
            label,
            cairn: best_c,
            base: best_b,
            stored,
            goal,
        });
    }

    section("bench disk: results (best of 2)");
    println!(
        "{:<26} {:>11} {:>14} {:>12} {:>7} {:>6}",
        "device", "cairn MB/s", "baseline MB/s", "stored MiB", "ratio", "goal"
    );
    for r in &results {
        let ratio = r.base.as_secs_f64() / r.cairn.as_secs_f64().max(1e-9);
        println!(
            "{:<26} {:>11.0} {:>14.0} {:>12} {:>7.2} {:>6}",
            r.label,
            mbps(size, r.cairn),
            mbps(size, r.base),
            r.stored / MIB,
            ratio,
            format!(">= {:.1}", r.goal)
        );
    }
    println!(
        "\nratio = baseline time / cairn time; both read the same loop device, page cache warm"
    );
    println!("cairn: cairn-agent capture disk --device DEV --out DIR (DIR on tmpfs)");
    println!("baseline: bash -c '{}'", baseline_cmd("DEV"));
    println!("command: cargo xtask bench disk --size-mib {size_mib}");
    Ok(())
}
