//! `cargo xtask bench memory`: memory capture against what responders use today, same data,
//! same run.
//!
//! 1. Process memory: a process with 1 GiB resident (half random, half zero pages), captured
//!    with `cairn-agent capture memory` (hashed, compressed, framed: ready to ship) and by hand
//!    with `gcore`, then `openssl dgst -sha256` and `zstd -1` of the core. Both cores must open
//!    in gdb and show the same pattern.
//! 2. Physical memory in the QEMU guest (Debian's 6.1 cloud kernel, TCG): cairn and AVML in
//!    the same boot, their times, and how much of the guest's iomem System RAM each image holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use cairn_harness::Bins;

use crate::procs::{build_release, ensure_tools, repo_root, run_inherit, section, target_dir};
use crate::vm_memory::{capture_in_guest, coverage, iomem_ram, lime_ranges};

const MIB: u64 = 1 << 20;

struct Fixture {
    child: std::process::Child,
    pid: u32,
    heap: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fixture(work: &Path, random_mib: u64, zero_mib: u64) -> Result<(Fixture, PathBuf)> {
    let src = repo_root().join("tests/fixtures/memory_fixture.c");
    let exe = work.join("memory_fixture");
    let mut cc = Command::new("cc");
    cc.args(["-g", "-O2", "-pthread", "-o"]).arg(&exe).arg(&src);
    cairn_harness::run(cc, Duration::from_secs(120))?.ok()?;
    let mapped = work.join("mapped.bin");
    std::fs::write(&mapped, vec![b'm'; 8192])?;
    let trunc = work.join("trunc.bin");
    std::fs::write(&trunc, vec![b't'; 8192])?;
    let mut child = Command::new(&exe)
        .arg(&mapped)
        .arg(&trunc)
        .arg(random_mib.to_string())
        .arg(zero_mib.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
        .read_line(&mut line)?;
    let heap = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("heap="))
        .ok_or_else(|| anyhow!("fixture printed {line:?}"))?
        .to_string();
    Ok((Fixture { child, pid, heap }, exe))
}

fn timed(cmd: Command, what: &str) -> Result<f64> {
    let t = Instant::now();
    cairn_harness::run(cmd, Duration::from_secs(1800))?
        .ok()
        .with_context(|| what.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

fn gdb_reads_heap(exe: &Path, core: &Path, heap: &str) -> Result<()> {
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-ex", &format!("x/s {heap}")])
        .arg(exe)
        .arg(core);
    let out = cairn_harness::run(gdb, Duration::from_secs(300))?;
    if !out.stdout.contains("CAIRN_HEAP_PATTERN_7f3a") {
        bail!(
            "gdb cannot read the heap pattern from {}:\n{}",
            core.display(),
            out.stdout
        );
    }
    Ok(())
}

fn process(bins: &Bins, work: &Path, size_mib: u64) -> Result<()> {
    section(&format!(
        "process memory: {size_mib} MiB resident (half random, half zero pages)"
    ));
    let (fx, exe) = start_fixture(work, size_mib / 2, size_mib / 2)?;
    let dir = work.join("cairn");
    let mut cairn = Command::new(bins.agent()?);
    cairn
        .args(["capture", "memory", "--pid", &fx.pid.to_string(), "--out"])
        .arg(&dir)
        .env("CAIRN_LOG", "warn");
    let cairn_s = timed(cairn, "cairn-agent capture memory")?;

    let base = work.join("gcore");
    let mut gcore = Command::new("gcore");
    gcore.arg("-o").arg(&base).arg(fx.pid.to_string());
    let core = PathBuf::from(format!("{}.{}", base.display(), fx.pid));
    let t = Instant::now();
    timed(gcore, "gcore")?;
    let mut sha = Command::new("openssl");
    sha.args(["dgst", "-sha256"]).arg(&core);
    timed(sha, "openssl dgst")?;
    let mut zstd = Command::new("zstd");
    zstd.args(["-1", "-q", "-f"])
        .arg(&core)
        .arg("-o")
        .arg(work.join("gcore.zst"));
    timed(zstd, "zstd -1")?;
    let manual_s = t.elapsed().as_secs_f64();

    // Both cores open in gdb.
    let unpacked = work.join("cairn.core");
    let mut unpack = Command::new(bins.agent()?);
    unpack
        .arg("unpack")
        .arg(&dir)
        .args(["--item", &format!("core.{}.memory_fixture", fx.pid), "--to"])
        .arg(&unpacked);
    cairn_harness::run(unpack, Duration::from_secs(600))?.ok()?;
    gdb_reads_heap(&exe, &unpacked, &fx.heap)?;
    gdb_reads_heap(&exe, &core, &fx.heap)?;
    let core_len = std::fs::metadata(&unpacked)?.len();
    let stored: u64 = std::fs::read_dir(dir.join("items"))?
        .flatten()
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    let zst = std::fs::metadata(work.join("gcore.zst"))?.len();
    println!(
        "cairn capture memory:        {cairn_s:7.2} s  ({:.0} MB/s of core, {} MiB stored)",
        core_len as f64 / cairn_s / 1e6,
        stored / MIB
    );
    println!(
        "gcore + openssl + zstd -1:   {manual_s:7.2} s  ({} MiB core, {} MiB .zst)",
        std::fs::metadata(&core)?.len() / MIB,
        zst / MIB
    );
    println!(
        "ratio (by hand / cairn):     {:7.2}x   (goal ≥ 2x; both cores read by gdb)",
        manual_s / cairn_s
    );
    Ok(())
}

fn avml_binary() -> Result<PathBuf> {
    let root = target_dir().join("avml");
    let bin = root.join("bin/avml");
    if !bin.is_file() {
        section("cargo install avml (crates.io) into target/avml");
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.args(["install", "avml", "--no-default-features", "--root"])
            .arg(&root);
        run_inherit(c)?;
    }
    Ok(bin)
}

fn physical(bins: &Bins, memory_mib: u32) -> Result<()> {
    section(&format!(
        "physical memory: {memory_mib} MiB QEMU guest, cairn and AVML in the same boot"
    ));
    let avml = avml_binary()?;
    let g = capture_in_guest(&bins.agent()?, memory_mib, Some(&avml))?;
    let ram = iomem_ram(&g.iomem);
    let ram_bytes: u64 = ram.iter().map(|(a, b)| b - a + 1).sum();
    let lime = lime_ranges(&g.lime)?;
    let gap_bytes: u64 = g.manifest["gaps"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["length"].as_u64()).sum())
        .unwrap_or(0);
    let cairn_cov = coverage(&ram, &lime) - gap_bytes;
    let (avml_img, avml_s) = g.avml.clone().ok_or_else(|| anyhow!("AVML did not run"))?;
    let avml_ranges = lime_ranges(&avml_img)?;
    let avml_cov = coverage(&ram, &avml_ranges);
    println!(
        "guest iomem System RAM:      {ram_bytes} bytes in {} ranges",
        ram.len()
    );
    println!(
        "cairn (hash+compress):       {:7.2} s  read {cairn_cov} bytes, {gap_bytes} recorded as gaps, {} MiB stored",
        g.cairn_seconds,
        g.cairn_stored_bytes / MIB
    );
    println!(
        "avml (raw LiME):             {avml_s:7.2} s  read {avml_cov} bytes, {} bytes of RAM absent without a note",
        ram_bytes - avml_cov
    );
    println!(
        "ratio (avml / cairn):        {:7.2}x   (goal > 1)",
        avml_s / g.cairn_seconds
    );
    Ok(())
}

pub fn run(size_mib: u64, memory_mib: u32) -> Result<()> {
    ensure_tools(&[
        ("gcore", "gdb"),
        ("openssl", "openssl"),
        ("zstd", "zstd"),
        ("cc", "gcc"),
    ])?;
    let bins = build_release()?;
    let work = tempfile::Builder::new()
        .prefix("bench-memory-")
        .tempdir_in(target_dir())?;
    process(&bins, work.path(), size_mib)?;
    physical(&bins, memory_mib)
}
