//! What only xtask needs around processes: `cargo` itself, commands with the user watching
//! (`run_inherit`, `section`), the tools a task needs (`ensure_tools`) and the release build.
//! Starting collectors and agents, running commands with a timeout, waiting and ports are the
//! harness's (`cairn-harness`, shared with the end-to-end tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use cairn_harness::{describe_cmd, have_command, Bins};

/// The repository root (xtask lives in `<root>/xtask`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo` as invoked by the user (`cargo xtask` sets `CARGO`).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    // `cargo run` gives xtask its own package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_…).
    // Passed on, they dirty build scripts that watch them (ring's), so every `cargo xtask`
    // rebuilt ring and all above it twice: for xtask without them, for the workspace with.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                k.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Runs a command with inherited stdio; error unless it exits 0.
pub fn run_inherit(mut cmd: Command) -> Result<()> {
    let line = describe_cmd(&cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// When each stage began, for the summary [`print_section_times`] prints.
static SECTIONS: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// A top-level step of `cargo xtask test`: a [`section`] whose time the summary shows.
pub fn stage(title: &str) {
    if let Ok(mut s) = SECTIONS.lock() {
        s.push((title.to_string(), std::time::Instant::now()));
    }
    section(title);
}

pub fn section(title: &str) {
    println!(
        "\n==== {title} {}",
        "=".repeat(70usize.saturating_sub(title.chars().count()))
    );
}

/// What each stage took, so a slow CI run says where its time went.
pub fn print_section_times() {
    let Ok(s) = SECTIONS.lock() else { return };
    let now = std::time::Instant::now();
    println!("\ntime by stage:");
    for (i, (title, start)) in s.iter().enumerate() {
        let end = s.get(i + 1).map(|n| n.1).unwrap_or(now);
        println!(
            "  {:>7.1} s  {title}",
            end.duration_since(*start).as_secs_f64()
        );
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the effective uid of the process.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Makes sure the commands exist; as root, installs the Debian packages providing the missing
/// ones (one `apt-get update`, then one `apt-get install`). Returns the commands still missing.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<Vec<String>> {
    let missing: Vec<(&str, &str)> = tools
        .iter()
        .copied()
        .filter(|(cmd, _)| !have_command(cmd))
        .collect();
    if missing.is_empty() {
        println!(
            "all present: {}",
            tools.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
        return Ok(Vec::new());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|m| m.1).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    if !is_root() || !have_command("apt-get") {
        println!(
            "warning: missing {}; install the Debian packages {} (as root, `cargo xtask test` does it)",
            missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
            pkgs.join(" ")
        );
        return Ok(missing.iter().map(|m| m.0.to_string()).collect());
    }
    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(install)?;
    let still: Vec<String> = missing
        .iter()
        .filter(|(cmd, _)| !have_command(cmd))
        .map(|m| m.0.to_string())
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(still)
}

/// Runs a benchmark example (at most two hours) and reads the one JSON object it prints
/// last.
pub fn run_example_json(cmd: std::process::Command, name: &str) -> Result<serde_json::Value> {
    let out = cairn_harness::run(cmd, std::time::Duration::from_secs(7200))?.ok()?;
    out.stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| anyhow::anyhow!("{name} printed no JSON: {}", out.stdout))
}

/// `cargo build --release --bins` and where the results are.
/// `cargo build --release -p PACKAGE --example NAME`, and where the example is.
pub fn build_release_example(package: &str, name: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", package, "--example", name]);
    run_inherit(cmd)?;
    let p = target_dir().join("release").join("examples").join(name);
    if !p.is_file() {
        anyhow::bail!("{} was not built", p.display());
    }
    Ok(p)
}

pub fn build_release() -> Result<Bins> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--bins"]);
    run_inherit(cmd)?;
    let bins = Bins::in_dir(
        target_dir().join("release"),
        "`cargo build --release --bins` did not build it",
    );
    bins.check()?;
    Ok(bins)
}
