//! `cargo xtask`: cairn's build, test, demo and benchmark driver.

mod bench;
mod bench_console;
mod bench_containment;
mod bench_disk;
mod bench_fleet;
mod bench_instances;
mod bench_load;
mod bench_memory;
mod bench_sensor;
mod bench_timeline;
mod demo;
mod fuzz;
mod procs;
mod setup;
mod tidy;
mod vm;
mod vm_containment;
mod vm_memory;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use procs::{cargo, run_inherit, section};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "cairn's build, test, demo and benchmark driver"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the tools the tests use (as root), build the binaries and run every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`; a second `--` reaches the test binaries).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings`, as CI runs them.
    Lint,
    /// Check the source tree's shape: module floors (the `floors` blocks of ARCHITECTURE.md,
    /// no import upwards, no import cycle), files over 700 lines without a reason at the top,
    /// crates that must never depend on each other. Prints the findings; fails if there are any.
    Tidy {
        /// Instead, print what each top-level module of this crate directory imports (to write
        /// or check its floors block).
        #[arg(long, value_name = "CRATE_DIR")]
        imports: Option<String>,
    },
    /// Prepare this machine (as root): install clang, libbpf-dev and the tools the tests use
    /// (one apt-get update, only what is missing), mount tracefs and bpffs if absent.
    Setup,
    /// Start a collector and an agent on loopback, collect volatile evidence and verify it.
    Demo {
        /// Leave the collector and the agent running at the end (prints their pids).
        #[arg(long)]
        keep_running: bool,
    },
    /// Fuzz the decoders of outside bytes (`cairn-fuzz`): every target, or those named, for
    /// `--seconds` in all. Crashing inputs are saved in fuzz/regressions/TARGET/ and fail the run.
    Fuzz {
        /// Targets to run (`cargo run -p cairn-fuzz -- list` lists them); default: all.
        targets: Vec<String>,
        /// Seconds in all, split evenly between the targets.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Seed of the mutations (default: from the clock; the run prints it).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Benchmarks against a baseline on the same data in the same run (`ingest`, `sensor`,
    /// `memory`, `disk`, `timeline`, `fuzz`, `load`, `console`, `containment`, `fleet`).
    Bench {
        /// Which benchmark.
        name: String,
        /// Size of the test data in MiB (ingest: default 1024; memory: the process's resident
        /// memory, default 1024; disk: each loop device, default 2048).
        #[arg(long)]
        size_mib: Option<u64>,
        /// sensor: how many execs of /bin/true in the exec storm.
        #[arg(long, default_value_t = 20_000)]
        execs: u32,
        /// sensor: how many TCP connects in the connect storm.
        #[arg(long, default_value_t = 5_000)]
        connects: u32,
        /// memory: RAM of the QEMU guest whose physical memory is captured.
        #[arg(long, default_value_t = 512)]
        guest_mib: u32,
        /// timeline, console: how many events to ingest.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// timeline: how many trigger-to-first-chunk runs; console: how many timed page loads.
        #[arg(long, default_value_t = 20)]
        triggers: u32,
        /// fuzz: seconds in all, split between the targets.
        #[arg(long, default_value_t = 240.0)]
        seconds: f64,
        /// ingest: also run the collector on these back ends, beside the default, in the same
        /// run: `postgres`, `s3`, or both (`postgres,s3`); PostgreSQL and Garage are started on
        /// loopback by the benchmark. timeline: `postgres` runs the timeline engine on a
        /// throwaway PostgreSQL instead of SQLite (default `sqlite`).
        #[arg(long)]
        backend: Option<String>,
        /// load: how many simulated agents connect to the one collector.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// load: collector instances sharing one PostgreSQL and one bucket (Garage), the agents
        /// spread over them; more than 1 runs the fleet benchmark (#16).
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// fleet: how many hosts, in how many scaling groups.
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 20)]
        groups: usize,
        /// load: what each collection sends: `shared` (the volatile documents captured once,
        /// sent by each agent as its own) or `live` (each agent runs the real capture).
        #[arg(long, default_value = "shared")]
        capture: String,
    },
    /// A second kernel (Debian's 6.1 cloud kernel) in a QEMU guest (TCG, no network):
    /// `prepare`, `smoke`, `sensor`, `memory`, `containment`, `run SCRIPT`.
    Vm {
        #[command(subcommand)]
        cmd: vm::VmCmd,
    },
}

/// Commands the end-to-end tests run, and the Debian packages that provide them.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("sha256sum", "coreutils"),
    ("sleep", "coreutils"),
    ("curl", "curl"),
    ("gdb", "gdb"),
    ("readelf", "binutils"),
    ("zstd", "zstd"),
    ("openssl", "openssl"),
    ("fls", "sleuthkit"),
    ("icat", "sleuthkit"),
    ("mactime", "sleuthkit"),
    ("mount", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"),
    ("cloud-init", "cloud-init"),
    ("systemd-analyze", "systemd"),
    ("capsh", "libcap2-bin"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    // The memory tests build their fixture with the system C compiler.
    ("cc", "gcc"),
    ("unshare", "util-linux"),
    // Containment: host isolation is an nftables table; its tests build network namespaces
    // and ping through them.
    ("nsenter", "util-linux"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("python3", "python3"),
    // Encrypted offline collections are decrypted with the reference age CLI.
    ("age", "age"),
    // The console's browser test: Debian's headless Chromium and its WebDriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // Rotated logs for the timeline's tests are made by the real gzip; its binary journal
    // fixtures by systemd's own writer (collector-server/src/timeline/parse/testdata/).
    ("gzip", "gzip"),
    ("journalctl", "systemd"),
    (
        "/usr/lib/systemd/systemd-journal-remote",
        "systemd-journal-remote",
    ),
];

/// The end-to-end suites that run a second time on PostgreSQL + S3 (#16): collections,
/// resume, custody tampering, import, timeline, triggers, the self-test.
const SHARED_BACKEND_SUITES: &[&str] = &[
    "spine", "resume", "custody", "offline", "timeline", "triggers", "selftest", "fleet",
];

/// PATH with the Python tools `setup` installed first.
fn tool_path() -> Result<Vec<std::path::PathBuf>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![setup::pytools_dir().join("bin")];
    dirs.extend(std::env::split_paths(&path));
    Ok(dirs)
}

fn test(args: &[String]) -> Result<()> {
    procs::stage("setup: tools, packages, Garage");
    setup::run(TEST_TOOLS)?;
    procs::stage("cargo build --workspace --bins");
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    run_inherit(build)?;
    procs::stage("cargo test --workspace");
    let mut t = cargo();
    t.args(["test", "--workspace", "--no-fail-fast"]).args(args);
    // The Python tools `setup` installed (volatility3, kubernetes-validate) come first.
    t.env("PATH", std::env::join_paths(tool_path()?)?);
    let unit = run_inherit(t);
    // The same suites once more, with every collector on PostgreSQL for metadata and Garage
    // (S3) for evidence: the suites are not copied, the harness picks the back ends.
    procs::stage("e2e suites on PostgreSQL + S3 (CAIRN_TEST_BACKENDS=postgres+s3)");
    let mut t = cargo();
    t.args(["test", "-p", "cairn-e2e", "--no-fail-fast"]);
    for suite in SHARED_BACKEND_SUITES {
        t.args(["--test", suite]);
    }
    t.env("CAIRN_TEST_BACKENDS", "postgres+s3");
    t.env("PATH", std::env::join_paths(tool_path()?)?);
    let unit = both(unit, run_inherit(t));
    // Every fuzz target briefly: a crash found here is saved as a regression and fails the run.
    procs::stage("fuzz: every decoder of outside bytes, a minute in all");
    let unit = match (unit, fuzz::run(&[], 60.0, None)) {
        (Ok(()), r) => r,
        (Err(e), Ok(())) => Err(e),
        (Err(a), Err(b)) => Err(a.context(format!("and: {b:#}"))),
    };
    // The sensor on a second kernel: Debian's 6.1 cloud kernel in a QEMU guest.
    procs::stage("vm sensor: the eBPF sensor on Debian's 6.1 cloud kernel (QEMU, TCG)");
    let sensor = vm::vm_sensor_check();
    procs::stage("vm memory: physical memory of the 6.1 cloud kernel to LiME (QEMU, TCG)");
    let memory = vm_memory::vm_memory_check();
    procs::stage("vm containment: the containment tests on the 6.1 cloud kernel (QEMU, TCG)");
    let containment = vm_containment::vm_containment_check();
    let guest = both(both(sensor, memory), containment);
    procs::print_section_times();
    match (unit, guest) {
        (Ok(()), Ok(())) => {
            section("tests passed");
            Ok(())
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(e)) => Err(e.context("a check on the second kernel failed")),
        (Err(a), Err(b)) => {
            Err(a.context(format!("and a check on the second kernel failed: {b:#}")))
        }
    }
}

/// Both checks' results: the first error, with the second's added to it.
fn both(a: Result<()>, b: Result<()>) -> Result<()> {
    match (a, b) {
        (Ok(()), r) => r,
        (Err(e), Ok(())) => Err(e),
        (Err(a), Err(b)) => Err(a.context(format!("and: {b:#}"))),
    }
}

fn lint() -> Result<()> {
    section("cargo fmt --all --check");
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run_inherit(fmt)?;
    section("cargo clippy --workspace --all-targets -- -D warnings");
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run_inherit(clippy)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Test { args } => test(&args),
        Cmd::Lint => lint(),
        Cmd::Tidy { imports } => tidy::run(&procs::repo_root(), imports.as_deref()),
        Cmd::Setup => setup::run(TEST_TOOLS),
        Cmd::Demo { keep_running } => demo::run(keep_running),
        Cmd::Fuzz {
            targets,
            seconds,
            seed,
        } => fuzz::run(&targets, seconds, seed),
        Cmd::Bench {
            name,
            size_mib,
            execs,
            connects,
            guest_mib,
            events,
            triggers,
            seconds,
            agents,
            capture,
            backend,
            instances,
            hosts,
            groups,
        } => match name.as_str() {
            "ingest" => bench::ingest(size_mib.unwrap_or(1024), backend.as_deref()),
            "sensor" => bench_sensor::run(execs, connects),
            "memory" => bench_memory::run(size_mib.unwrap_or(1024), guest_mib),
            "disk" => bench_disk::run(size_mib.unwrap_or(2048)),
            "timeline" => bench_timeline::run(events, triggers, backend.as_deref()),
            "fuzz" => fuzz::bench(seconds),
            "load" => bench_load::run(agents, &capture, instances),
            "console" => bench_console::run(events, triggers),
            "containment" => bench_containment::run_bench(),
            "fleet" => bench_fleet::run(hosts, groups, events),
            other => {
                eprintln!(
                    "error: unknown benchmark {other:?} (known: ingest, sensor, memory, disk, \
                     timeline, fuzz, load, console, containment, fleet)"
                );
                return ExitCode::from(2);
            }
        },
        Cmd::Vm { cmd } => vm::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
