//! `cargo xtask setup`: what a fresh machine needs before the build and the tests, as root.
//!
//! - Debian packages: clang and libbpf-dev (the eBPF build: `ebpf/build.rs` compiles C with
//!   clang against libbpf's headers), postgresql (the server the PostgreSQL store's tests
//!   start, `cairn_harness::TempPostgres`) and the tools the tests run; one `apt-get update`, then one
//!   `apt-get install`, only for what is missing.
//! - Python tools the tests run (volatility3, kubernetes-validate), in a virtualenv at
//!   `target/pytools` so that nothing is installed into the system's Python; `cargo xtask test`
//!   puts its `bin/` first on the tests' PATH.
//! - Garage, the S3-compatible server of the object-store tests, built from crates.io once per
//!   machine into `/var/cache/cairn/tools` (see [`garage`]).
//! - tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf, mounted if absent (the sensor
//!   attaches tracepoints through tracefs).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use cairn_harness::have_command;

use crate::procs::{run_inherit, section};

/// What the build needs: (how to tell it is there, Debian package).
enum Need {
    Command(&'static str),
    File(&'static str),
    /// PostgreSQL 15 or newer in `/usr/lib/postgresql/*/bin`, whichever version Debian has.
    Postgres,
}

const BUILD_NEEDS: &[(Need, &str)] = &[
    (Need::Command("clang"), "clang"),
    (Need::File("/usr/include/bpf/bpf_helpers.h"), "libbpf-dev"),
];

/// What the tests need beyond commands: a PostgreSQL server for the collector's PostgreSQL
/// back end (`cairn_harness::TempPostgres`).
const TEST_NEEDS: &[(Need, &str)] = &[(Need::Postgres, "postgresql")];

fn present(n: &Need) -> bool {
    match n {
        Need::Command(c) => have_command(c),
        Need::File(f) => Path::new(f).is_file(),
        Need::Postgres => cairn_harness::postgres::postgres_bin_dir().is_ok(),
    }
}

fn describe(n: &Need) -> &'static str {
    match n {
        Need::Command(c) | Need::File(c) => c,
        Need::Postgres => "PostgreSQL 15 or newer",
    }
}

fn is_root() -> bool {
    nix_like_euid() == Some(0)
}

/// The effective uid, from /proc/self/status (no libc dependency in xtask).
fn nix_like_euid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Installs what is missing of the build's and the tests' packages, the tests' Python tools;
/// mounts tracefs and bpffs.
pub fn run(test_tools: &[(&str, &str)]) -> Result<()> {
    packages(TEST_NEEDS, test_tools)?;
    python_tools()?;
    garage()?;
    mounts()
}

/// The S3-compatible server the object-store tests run: Garage, built from crates.io (it is
/// AGPL: run as a separate server, never linked) once per machine into
/// [`cairn_harness::garage::GARAGE_CACHE`], where later runs find it. Built without its
/// optimisations: the tests move megabytes, not terabytes, and an optimised build costs
/// three times the CPU.
fn garage() -> Result<()> {
    use cairn_harness::garage::{GARAGE_CACHE, GARAGE_VERSION};
    section("garage (S3-compatible test server)");
    let bin = Path::new(GARAGE_CACHE).join("bin/garage");
    if bin.is_file() {
        println!("present: {}", bin.display());
        return Ok(());
    }
    let target = crate::procs::target_dir().join("garage-build");
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "garage",
        "--locked",
        "--debug",
        "--version",
        GARAGE_VERSION,
    ])
    .args(["--no-default-features", "--features", "bundled-libs,sqlite"])
    .arg("--root")
    .arg(GARAGE_CACHE)
    .env("CARGO_TARGET_DIR", &target)
    // No debug info: less build time, and a tenth of the binary.
    .env("CARGO_PROFILE_DEV_DEBUG", "0");
    run_inherit(cmd)?;
    // The build tree is a GiB the tests never read again.
    let _ = std::fs::remove_dir_all(&target);
    if !bin.is_file() {
        bail!(
            "cargo install garage finished but {} is missing",
            bin.display()
        );
    }
    Ok(())
}

/// What the demo needs on a fresh machine: the build's packages and `tools`, tracefs and bpffs
/// (no Python tools: the demo runs none).
pub fn for_demo(tools: &[(&str, &str)]) -> Result<()> {
    packages(&[], tools)?;
    mounts()
}

/// A test tool: a command on PATH, or a program by its absolute path (the ones packages
/// install off PATH, such as `/usr/lib/systemd/systemd-journal-remote`).
fn have_tool(tool: &str) -> bool {
    if tool.starts_with('/') {
        Path::new(tool).is_file()
    } else {
        have_command(tool)
    }
}

fn packages(needs: &[(Need, &str)], test_tools: &[(&str, &str)]) -> Result<()> {
    section("packages (clang, libbpf-dev, test tools)");
    let mut missing: Vec<(&str, &str)> = BUILD_NEEDS
        .iter()
        .chain(needs)
        .filter(|(n, _)| !present(n))
        .map(|(n, p)| (describe(n), *p))
        .collect();
    missing.extend(test_tools.iter().copied().filter(|(c, _)| !have_tool(c)));
    if missing.is_empty() {
        println!("all present");
    } else {
        let mut pkgs: Vec<&str> = missing.iter().map(|m| m.1).collect();
        pkgs.sort_unstable();
        pkgs.dedup();
        let what = missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", ");
        if !is_root() || !have_command("apt-get") {
            bail!(
                "missing {what}: install the Debian packages {} (as root: `cargo xtask setup`)",
                pkgs.join(" ")
            );
        }
        let mut update = Command::new("apt-get");
        update
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_inherit(update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_inherit(install)?;
        let still: Vec<&str> = BUILD_NEEDS
            .iter()
            .chain(needs)
            .filter(|(n, _)| !present(n))
            .map(|(n, _)| describe(n))
            .chain(
                test_tools
                    .iter()
                    .filter(|(c, _)| !have_tool(c))
                    .map(|t| t.0),
            )
            .collect();
        if !still.is_empty() {
            bail!("still missing after apt-get install: {}", still.join(", "));
        }
    }
    Ok(())
}

fn mounts() -> Result<()> {
    section("tracefs and bpffs");
    mount_if_absent(
        "/sys/kernel/tracing",
        "tracefs",
        Path::new("/sys/kernel/tracing/events").is_dir()
            || Path::new("/sys/kernel/debug/tracing/events").is_dir(),
    )?;
    mount_if_absent("/sys/fs/bpf", "bpf", is_mounted("/sys/fs/bpf", "bpf"))?;
    Ok(())
}

fn is_mounted(point: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                let at = l.split_whitespace().nth(4);
                let ty = l
                    .split_once(" - ")
                    .and_then(|(_, p)| p.split_whitespace().next());
                at == Some(point) && ty == Some(fstype)
            })
        })
        .unwrap_or(false)
}

fn mount_if_absent(point: &str, fstype: &str, present: bool) -> Result<()> {
    if present {
        println!("{fstype}: present");
        return Ok(());
    }
    if !is_root() {
        println!("warning: {fstype} is not mounted at {point}; as root: mount -t {fstype} {fstype} {point}");
        return Ok(());
    }
    if !Path::new(point).is_dir() {
        println!("warning: {point} does not exist: this kernel lacks {fstype}");
        return Ok(());
    }
    let mut m = Command::new("mount");
    m.args(["-t", fstype, fstype, point]);
    run_inherit(m)
}

/// Python tools the tests run: (command, PyPI package).
const PYTHON_TOOLS: &[(&str, &str)] = &[
    ("vol", "volatility3"),
    ("kubernetes-validate", "kubernetes-validate"),
];

/// The virtualenv that holds [`PYTHON_TOOLS`]: `target/pytools`.
pub fn pytools_dir() -> std::path::PathBuf {
    crate::procs::target_dir().join("pytools")
}

/// Creates the virtualenv if needed and pip-installs what is missing from it.
fn python_tools() -> Result<()> {
    section("python tools (volatility3, kubernetes-validate) in target/pytools");
    let dir = pytools_dir();
    let bin = dir.join("bin");
    let missing: Vec<&str> = PYTHON_TOOLS
        .iter()
        .filter(|(c, _)| !bin.join(c).is_file())
        .map(|t| t.1)
        .collect();
    if missing.is_empty() {
        println!("all present in {}", bin.display());
        return Ok(());
    }
    if !bin.join("pip").is_file() {
        let make = || {
            let mut venv = Command::new("python3");
            venv.args(["-m", "venv"]).arg(&dir);
            run_inherit(venv)
        };
        if make().is_err() {
            // Debian's python3 ships without venv and ensurepip.
            if !is_root() || !have_command("apt-get") {
                bail!("cannot create a Python virtualenv: install python3-venv (as root: `cargo xtask setup`)");
            }
            let mut install = Command::new("apt-get");
            install
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "python3-venv",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive");
            run_inherit(install)?;
            let _ = std::fs::remove_dir_all(&dir); // a half-made venv
            make().map_err(|e| {
                e.context("cannot create a Python virtualenv even with python3-venv")
            })?;
        }
    }
    let mut pip = Command::new(bin.join("pip"));
    pip.args(["install", "-q", "--disable-pip-version-check"])
        .args(&missing);
    run_inherit(pip)?;
    Ok(())
}
