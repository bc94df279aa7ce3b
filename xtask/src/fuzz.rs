//! `cargo xtask fuzz [TARGET…] [--seconds N]` and `cargo xtask bench fuzz`: build `cairn-fuzz`
//! and run it. The debug build is the one fuzzed: its overflow checks turn a wrapped integer
//! into a finding, and its dependencies are already built for the tests.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::procs::{cargo, repo_root, run_inherit, target_dir};

fn build() -> Result<PathBuf> {
    // With the workspace's features, as `cargo xtask test` built it: `-p cairn-fuzz` alone
    // unifies features differently and rebuilds a second copy of the collector and its deps
    // (minutes, and a GiB of disk).
    let mut b = cargo();
    b.args(["build", "--workspace", "--bins"]);
    run_inherit(b)?;
    Ok(target_dir().join("debug").join("cairn-fuzz"))
}

/// Run targets (all when none is named) for `seconds` in all; fails on any crash.
pub fn run(targets: &[String], seconds: f64, seed: Option<u64>) -> Result<()> {
    let bin = build()?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(repo_root())
        .arg("run")
        .args(targets)
        .args(["--seconds", &seconds.to_string()]);
    if let Some(s) = seed {
        cmd.args(["--seed", &s.to_string()]);
    }
    println!("$ {}", cairn_harness::describe_cmd(&cmd));
    let status = cmd.status().context("cannot start cairn-fuzz")?;
    match status.code() {
        Some(0) => Ok(()),
        // cairn-fuzz's exit code for "crashes found" (2 is a usage or I/O error).
        Some(1) => bail!(
            "the fuzzer found crashes: fix the decoders; the inputs are saved in fuzz/regressions/"
        ),
        _ => bail!("cairn-fuzz failed ({status})"),
    }
}

/// Crashes found so far, by target: every file in `fuzz/regressions/TARGET/`. Each is
/// replayed by `cargo test -p cairn-fuzz`, so each one listed there is fixed.
fn regressions() -> Result<Vec<(String, usize)>> {
    let dir = repo_root().join("fuzz").join("regressions");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in rd {
        let e = e?;
        if e.file_type()?.is_dir() {
            let n = fs::read_dir(e.path())?.count();
            out.push((e.file_name().to_string_lossy().into_owned(), n));
        }
    }
    out.sort();
    Ok(out)
}

/// The figures for BENCHMARKS.md: inputs per second of every target, and the crashes found
/// and fixed.
pub fn bench(seconds: f64) -> Result<()> {
    crate::procs::section(&format!("bench fuzz: every target, {seconds} s in all"));
    run(&[], seconds, Some(1))?;
    let found = regressions()?;
    let total: usize = found.iter().map(|f| f.1).sum();
    println!("\ncrashes found and fixed (fuzz/regressions/, replayed by `cargo test -p cairn-fuzz`): {total}");
    for (target, n) in found {
        println!("  {target}: {n}");
    }
    Ok(())
}
