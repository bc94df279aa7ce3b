//! `cairn-agent`: the host agent.
//! Long file: the CLI, one subcommand per user action, each with its arguments and its output.

use anyhow::Result;
use cairn_agent::config::{StateDir, DEFAULT_STATE_DIR};
use cairn_protocol::manifest::CollectRequest;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn-agent",
    version,
    about = "cairn host agent: captures evidence and streams it to the collector"
)]
struct Cli {
    /// Where the agent keeps its key, certificate, configuration and spool.
    #[arg(long, env = "CAIRN_AGENT_STATE", default_value = DEFAULT_STATE_DIR, global = true)]
    state_dir: PathBuf,
    /// The host's root file system when the agent runs in a container (e.g. `/host`): /proc and
    /// collected paths resolve inside it. Overrides `host_root` in agent.toml.
    #[arg(long, env = "CAIRN_HOST_ROOT", global = true)]
    host_root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll this host with a collector (once): get a client certificate for a new local key.
    Enroll {
        /// The collector's QUIC address, HOST:PORT; several collectors serving one fleet as
        /// HOST:PORT,HOST:PORT (a name with several addresses works too): enrollment uses the
        /// first, and the running agent fails over between them.
        #[arg(long)]
        collector: String,
        /// Enrollment token from `cairn-collector init` or `cairn-collector token create`.
        #[arg(long, env = "CAIRN_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// SHA-256 fingerprint of the collector's CA, as `cairn-collector init` printed it.
        #[arg(long)]
        ca_sha256: String,
        /// Become a new host at the collector even if this machine (its machine id and cloud
        /// instance id) enrolled before; without it, the machine keeps its host id and its
        /// previous certificate stops working.
        #[arg(long, env = "CAIRN_NEW_IDENTITY", value_parser = clap::builder::BoolishValueParser::new())]
        new_identity: bool,
    },
    /// Stay connected to the collector and execute collection commands.
    Run,
    /// Check that the collector accepts this agent (mutual TLS handshake and hello).
    Ping,
    /// Collect without a collector, into a directory (`cairn import DIR` loads it later).
    Collect {
        /// volatile, file (with --path), memory, full, triage, minimal, disk (with --device),
        /// or the name of a profile file (--profile-file, or STATE/profiles/NAME.toml).
        /// Default: volatile; triage with --root.
        #[arg(long)]
        profile: Option<String>,
        /// Files for the file profile (repeatable).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// A triage profile file (TOML); its `name` becomes the profile unless --profile is given.
        #[arg(long)]
        profile_file: Option<PathBuf>,
        /// Triage this directory as the filesystem root instead of / (or --host-root): a
        /// mounted image, another system's root. The collection is filed under the host the
        /// image names (its etc/hostname, etc/machine-id, cloud-init instance id), and carries
        /// none of this machine's events.
        #[arg(long)]
        root: Option<PathBuf>,
        /// The host name to file a --root collection under, instead of the image's
        /// etc/hostname (recorded as given).
        #[arg(long, requires = "root")]
        host: Option<String>,
        /// Seconds of the flight recorder's past to carry (events.jsonl), instead of the
        /// profile's window (volatile 900, memory 3600, triage 86400); 0: none.
        #[arg(long, value_name = "SECS")]
        events_window: Option<u64>,
        /// Block devices for the disk profile (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Output directory (created; must not hold a collection already).
        #[arg(long)]
        out: PathBuf,
        /// Why: recorded in the collection.
        #[arg(long, default_value = "offline collection")]
        reason: String,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
    /// Capture one kind of evidence now, into an offline collection (`cairn import DIR`).
    Capture {
        #[command(subcommand)]
        what: CaptureCmd,
    },
    /// Write an item of an offline collection back to a file (a core for gdb, a LiME image for
    /// Volatility), checking every chunk and the whole item against its manifest.
    Unpack {
        /// The offline collection directory (`collect --out` / `capture --out`).
        dir: PathBuf,
        /// Item id, or its name as listed (`core.1234.nginx`, `physical-memory.lime`).
        #[arg(long)]
        item: String,
        /// Where to write the raw bytes.
        #[arg(long)]
        to: PathBuf,
    },
    /// Readiness self-test: can this host be collected from? Exits 1 if any check fails.
    Selftest {
        /// The report as JSON (schema in docs/selftest.md) instead of a table.
        #[arg(long)]
        json: bool,
        /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux (e.g. from BTFHub).
        #[arg(long)]
        btf: Option<PathBuf>,
        /// Do not send the report to the collector.
        #[arg(long)]
        no_report: bool,
    },
    /// Show process and network events on this host as they happen (eBPF sensor; as root).
    Events {
        /// Keep showing events until interrupted (without it: for --seconds, then stop).
        #[arg(long)]
        follow: bool,
        /// How long to watch without --follow.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// One JSON object per line (the format of docs/events.md) instead of a table.
        #[arg(long)]
        json: bool,
        /// Size of the kernel ring buffer (rounded up to a power of two, at least 4096).
        #[arg(long)]
        ring_buffer_bytes: Option<u64>,
        /// auto (eBPF, else /proc polling), ebpf (fail without BPF) or procfs.
        #[arg(long, default_value = "auto")]
        mode: String,
    },
    /// Containment in force on this host (isolation, freeze): its status, and the break-glass
    /// release.
    Isolation {
        #[command(subcommand)]
        what: IsolationCmd,
    },
}

#[derive(Subcommand)]
enum IsolationCmd {
    /// What is enforced now: the saved state checked against the kernel (the nftables table,
    /// the pinned cgroup programs, frozen cgroups). Exits 1 when they disagree.
    Status {
        /// As JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Break glass (as root): end an isolation here, without the collector. Who and why are
    /// queued for the collector, which records them when the agent next connects.
    Release {
        /// Required: says that this release bypasses the collector.
        #[arg(long, required = true)]
        local: bool,
        /// Why (sent to the collector and kept in the custody chain).
        #[arg(long)]
        reason: String,
        /// Release this container's isolation (its id or a prefix) instead of the host's.
        #[arg(long)]
        container: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaptureCmd {
    /// Image block devices (raw, hashed, zero blocks stored as nothing) into DIR; The Sleuth
    /// Kit reads the exported image (`cairn export ITEM -o disk.raw`).
    Disk {
        /// The device to image (repeatable): /dev/nvme1n1, /dev/loop0.
        #[arg(long = "device", required = true)]
        devices: Vec<String>,
        /// Output directory (created; must not hold a collection already).
        #[arg(long)]
        out: PathBuf,
        /// Why: recorded in the collection.
        #[arg(long, default_value = "disk capture")]
        reason: String,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
    /// Process cores (ELF, for gdb and lldb) and, with --physical, an image of all RAM.
    ///
    /// Each thread is stopped only while its registers are read (ptrace seize + interrupt);
    /// memory is then read while the process runs. Unreadable pages are recorded as gaps.
    #[command(group(clap::ArgGroup::new("target").multiple(true).required(true)
        .args(["pid", "container", "all", "physical"])))]
    Memory {
        /// The process to capture (repeatable).
        #[arg(long)]
        pid: Vec<u32>,
        /// Also every descendant of each --pid.
        #[arg(long, requires = "pid")]
        tree: bool,
        /// Every process of this container (full id or a 12+ character prefix).
        #[arg(long)]
        container: Option<String>,
        /// Every user process on the host (except this agent).
        #[arg(long)]
        all: bool,
        /// Physical memory as well (/proc/kcore, /dev/crash or /dev/mem).
        #[arg(long)]
        physical: bool,
        /// Physical image format: lime (LiME v1, what Volatility reads), raw or padded.
        #[arg(long, default_value = "lime")]
        format: cairn_agent::capture::memory::Format,
        /// Output directory (created; must not hold a collection already).
        #[arg(long)]
        out: PathBuf,
        /// Why: recorded in the collection.
        #[arg(long, default_value = "memory capture")]
        reason: String,
        #[command(flatten)]
        encrypt: EncryptArgs,
    },
}

/// Offline collections encrypted to the collector: unreadable on a USB stick or in a bucket.
#[derive(clap::Args)]
struct EncryptArgs {
    /// Encrypt every item to this age X25519 recipient (`age1…`); only its identity reads them.
    #[arg(long, value_name = "RECIPIENT", conflicts_with = "encrypt")]
    encrypt_to: Option<String>,
    /// Encrypt every item to the collector's key (the recipient it gave at enrollment or in
    /// its last welcome).
    #[arg(long)]
    encrypt: bool,
}

impl EncryptArgs {
    fn recipient(&self, state: &StateDir) -> Result<Option<cairn_agent::encryption::Recipient>> {
        if let Some(r) = &self.encrypt_to {
            return Ok(Some(cairn_agent::encryption::Recipient::parse(r)?));
        }
        if !self.encrypt {
            return Ok(None);
        }
        match state.evidence_recipient()? {
            Some(r) => Ok(Some(r)),
            None => anyhow::bail!(
                "--encrypt: the collector gave this agent no evidence recipient ({} does not exist): its encryption at rest is off, or this agent has not connected since it was turned on. Give the recipient with --encrypt-to age1…, or start the agent once to hear the collector's welcome",
                state.path(cairn_agent::encryption::RECIPIENT_FILE).display()
            ),
        }
    }
}

fn main() {
    // One malloc arena per thread (glibc's default) lets a busy sensor thread, the recorder
    // and the runtime each keep tens of MB of freed memory resident; two arenas are plenty
    // for an agent whose work is I/O.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Keys, spooled chunks, the journal and offline collections are for this user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(real_main(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn real_main(cli: Cli) -> Result<i32> {
    let state = StateDir::new(&cli.state_dir);
    match cli.cmd {
        Cmd::Enroll {
            collector,
            token,
            ca_sha256,
            new_identity,
        } => {
            let host_root = cli.host_root.clone().unwrap_or_else(|| PathBuf::from("/"));
            let host = tokio::task::spawn_blocking(move || {
                cairn_agent::identity::host_identity_in(&Default::default(), &host_root)
            })
            .await?;
            let who = cairn_agent::transport::enroll::EnrollAs {
                host: Some(host),
                new_identity,
            };
            let e =
                cairn_agent::transport::enroll::enroll(&state, &collector, &token, &ca_sha256, who)
                    .await?;
            println!("{}", e.agent_id);
            eprintln!(
                "enrolled with {collector} as agent {}; start it with: cairn-agent run --state-dir {}",
                e.agent_id,
                state.root.display()
            );
        }
        Cmd::Run => {
            state.check_private()?;
            let agent = cairn_agent::daemon::Agent::with_host_root(&state, cli.host_root).await?;
            // SIGTERM (systemd's stop, a pod's termination): a marked host sends its last
            // breath first, while the daemon's sessions go on.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut daemon = tokio::spawn(cairn_agent::daemon::run(agent.clone()));
            tokio::select! {
                r = &mut daemon => r??,
                _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
                _ = term.recv() => {
                    eprintln!("SIGTERM: stopping");
                    cairn_agent::daemon::shutdown(&agent).await;
                }
            }
        }
        Cmd::Ping => {
            let agent = cairn_agent::daemon::Agent::new(&state).await?;
            let rtt = cairn_agent::daemon::ping(&agent).await?;
            println!(
                "collector {} accepted agent {} (round trip {:.1} ms)",
                agent.cfg.collector,
                agent.cfg.agent_id,
                rtt.as_secs_f64() * 1000.0
            );
        }
        Cmd::Collect {
            profile,
            paths,
            profile_file,
            root,
            host,
            events_window,
            devices,
            out,
            reason,
            encrypt,
        } => {
            let recipient = encrypt.recipient(&state)?;
            // The profile file's own name is the profile, unless --profile names another.
            let profile = match (profile, &profile_file) {
                (Some(p), _) => p,
                (None, Some(f)) => cairn_agent::capture::disk::profile::load_file(f)?.name,
                (None, None) if root.is_some() => "triage".into(),
                (None, None) => "volatile".into(),
            };
            let mut opts = collect_options(&state, cli.host_root.as_deref());
            let mut image = None;
            if let Some(root) = root {
                let this_system =
                    std::fs::canonicalize(&root).is_ok_and(|r| r == std::path::Path::new("/"));
                if !this_system {
                    // Another system's files: only what is read from them belongs to it.
                    if matches!(
                        profile.as_str(),
                        "volatile" | "memory" | "full" | "file" | "disk"
                    ) {
                        anyhow::bail!(
                            "--root reads another system's files, and profile {profile} captures this running machine (its processes, memory, devices or paths); use a triage profile with --root (triage, minimal, or --profile-file)"
                        );
                    }
                    // Its identity, and none of this machine's events.
                    let reader = cairn_agent::identity::host_identity(&opts.volatile.metadata);
                    image = Some(cairn_agent::capture::disk::root_identity::identify(
                        &root,
                        host.as_deref(),
                        &reader,
                    )?);
                    opts.journal = None;
                } else if host.is_some() {
                    anyhow::bail!("--host names the host of another system's root (--root DIR other than /); {} is this running system", root.display());
                }
                opts.disk.root = root;
            }
            opts.events_window_secs = events_window;
            opts.disk.profile_file = profile_file;
            let req = local_request(profile, reason, paths, devices);
            offline(req, opts, out, recipient, image).await?;
        }
        Cmd::Capture { what } => match what {
            CaptureCmd::Disk {
                devices,
                out,
                reason,
                encrypt,
            } => {
                let recipient = encrypt.recipient(&state)?;
                let req = local_request("disk".into(), reason, Vec::new(), devices);
                let opts = collect_options(&state, cli.host_root.as_deref());
                let status = offline(req, opts, out, recipient, None).await?;
                if status == cairn_protocol::manifest::CollectionStatus::Failed {
                    anyhow::bail!("no device could be imaged (errors above)");
                }
            }
            CaptureCmd::Memory {
                pid,
                tree,
                container,
                all,
                physical,
                format,
                out,
                reason,
                encrypt,
            } => {
                use cairn_agent::capture::memory::targets;
                let recipient = encrypt.recipient(&state)?;
                let host_root = cli.host_root.clone().unwrap_or_else(|| "/".into());
                let proc_root = &host_root.join("proc");
                let mut pids = Vec::new();
                for p in &pid {
                    if !proc_root.join(p.to_string()).is_dir() {
                        anyhow::bail!("process {p} does not exist");
                    }
                    if tree {
                        pids.extend(targets::tree(proc_root, *p));
                    } else {
                        pids.push(*p);
                    }
                }
                if let Some(c) = &container {
                    let found = targets::container(proc_root, c).map_err(anyhow::Error::msg)?;
                    if found.is_empty() {
                        anyhow::bail!("no running process belongs to container {c}");
                    }
                    pids.extend(found);
                }
                if all {
                    pids.extend(targets::all(proc_root));
                }
                let req = CollectRequest {
                    collection_id: uuid::Uuid::new_v4().to_string(),
                    profile: "memory".into(),
                    reason,
                    requested_by: format!("local:{}", whoami()),
                    paths: Vec::new(),
                    pid: pid.first().copied(),
                    container_id: container,
                    devices: Vec::new(),
                };
                let mut opts = cairn_agent::collect::CollectOptions::default();
                opts.memory.pids = Some(pids);
                opts.memory.physical = physical;
                opts.memory.format = format;
                opts.memory.volatile = false;
                opts.volatile.proc_root = proc_root.clone();
                opts.volatile.host_root = host_root;
                offline(req, opts, out, recipient, None).await?;
            }
        },
        Cmd::Unpack { dir, item, to } => {
            let m = cairn_agent::offline::unpack(&dir, &item, &to)?;
            println!(
                "{}: {} bytes, SHA-256 {} verified [{:?}, {} gap(s)]",
                to.display(),
                m.raw_len,
                m.sha256,
                m.status,
                m.gaps.len()
            );
        }
        Cmd::Events {
            follow,
            seconds,
            json,
            ring_buffer_bytes,
            mode,
        } => {
            let limit = (!follow).then(|| std::time::Duration::from_secs(seconds));
            tokio::task::spawn_blocking(move || events(limit, json, ring_buffer_bytes, &mode))
                .await??;
        }
        Cmd::Selftest {
            json,
            btf,
            no_report,
        } => return selftest(&state, cli.host_root, btf, json, no_report).await,
        Cmd::Isolation { what } => {
            let host_root = cli.host_root.clone();
            let state = state.clone();
            return tokio::task::spawn_blocking(move || isolation(&state, host_root, what)).await?;
        }
    }
    Ok(0)
}

/// `cairn-agent isolation …`: read the containment state, or break glass.
fn isolation(state: &StateDir, host_root: Option<PathBuf>, what: IsolationCmd) -> Result<i32> {
    use cairn_agent::containment::{Containment, Roots};
    let host_root = host_root.or_else(|| state.load().ok().and_then(|c| c.host_root));
    let c = Containment::with_roots(Roots::detect(&state.root, host_root.as_deref()));
    match what {
        IsolationCmd::Status { json } => {
            let s = c.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.render());
            }
            Ok(i32::from(!s.consistent()))
        }
        IsolationCmd::Release {
            local: _,
            reason,
            container,
        } => {
            if !nix::unistd::geteuid().is_root() {
                anyhow::bail!("isolation release --local changes the host's firewall and BPF programs: run it as root");
            }
            let target = match container {
                Some(id) => cairn_protocol::containment::Target::Container { id },
                None => cairn_protocol::containment::Target::Host,
            };
            let user = match std::env::var("SUDO_USER") {
                Ok(u) if !u.is_empty() => format!("{u} (sudo to {})", whoami()),
                _ => whoami(),
            };
            let o = c.release_local(&target, &user, &reason)?;
            println!(
                "released the isolation of {} ({}); the collector hears of it (report {}) when the agent next connects",
                o.target.describe(),
                o.mechanism,
                o.id
            );
            Ok(0)
        }
    }
}

/// `cairn-agent selftest`: run every check, print, report to the collector when enrolled.
async fn selftest(
    state: &StateDir,
    host_root: Option<PathBuf>,
    btf: Option<PathBuf>,
    json: bool,
    no_report: bool,
) -> Result<i32> {
    use cairn_agent::selftest;
    let host_root = host_root
        .or_else(|| state.load().ok().and_then(|c| c.host_root))
        .unwrap_or_else(|| PathBuf::from("/"));
    let opts = selftest::SelftestOptions {
        state: state.clone(),
        host_root,
        btf,
        running_sensor: None,
    };
    let report = selftest::run(&opts).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", selftest::render(&report));
    }
    if !no_report && state.path("agent.toml").exists() {
        let pending = state.path(selftest::collector::PENDING_FILE);
        // The collector just did not answer: keep the report without waiting for it again.
        let sent = if selftest::collector::reached(&report) {
            selftest::collector::report(&opts, None, Some(&report)).await
        } else {
            selftest::collector::queue(&opts, &report)
                .and_then(|()| Err(anyhow::anyhow!("the collector did not answer")))
        };
        match sent {
            Ok(n) => eprintln!("readiness reported to the collector ({n} report(s) delivered)"),
            Err(e) => eprintln!(
                "readiness not reported to the collector: {e:#}; kept in {} for the next run",
                pending.display()
            ),
        }
    }
    Ok(i32::from(
        report.status == cairn_protocol::readiness::CheckStatus::Fail,
    ))
}

fn local_request(
    profile: String,
    reason: String,
    paths: Vec<String>,
    devices: Vec<String>,
) -> CollectRequest {
    CollectRequest {
        collection_id: uuid::Uuid::new_v4().to_string(),
        profile,
        reason,
        requested_by: format!("local:{}", whoami()),
        paths,
        pid: None,
        container_id: None,
        devices,
    }
}

/// Options for a local collection: the host's root (`--host-root`), the recent past if this
/// host's agent has been recording, and the agent's own profile directory.
fn collect_options(
    state: &StateDir,
    host_root: Option<&std::path::Path>,
) -> cairn_agent::collect::CollectOptions {
    let mut opts = cairn_agent::collect::CollectOptions::default();
    if let Some(root) = host_root {
        opts.volatile.proc_root = root.join("proc");
        opts.volatile.host_root = root.to_path_buf();
        opts.disk.root = root.to_path_buf();
        opts.disk.proc_root = root.join("proc");
    }
    if state.journal().is_dir() {
        opts.journal = Some(cairn_agent::collect::Journal {
            recorder: None,
            dir: state.journal(),
            window: std::time::Duration::from_secs(
                state.load().map(|c| c.journal_window_secs).unwrap_or(3600),
            ),
        });
    }
    opts.disk.profile_dirs = vec![state.profiles()];
    opts
}

/// Runs a collection into `out` and prints what it holds.
async fn offline(
    req: CollectRequest,
    opts: cairn_agent::collect::CollectOptions,
    out: PathBuf,
    encrypt_to: Option<cairn_agent::encryption::Recipient>,
    host: Option<cairn_protocol::manifest::HostIdentity>,
) -> Result<cairn_protocol::manifest::CollectionStatus> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let out2 = out.clone();
    let s = tokio::task::spawn_blocking(move || {
        let to = cairn_agent::offline::Destination {
            out: &out2,
            progress,
            encrypt_to: encrypt_to.as_ref(),
            host,
        };
        cairn_agent::offline::collect_to_dir(&req, &opts, to)
    })
    .await??;
    if let Some(root) = &s.record.host.source_root {
        println!(
            "evidence read from {root}, filed under host {:?}{}",
            s.record.host.hostname,
            s.record
                .host
                .machine_id
                .as_deref()
                .map(|m| format!(" (machine id {m})"))
                .unwrap_or_default()
        );
    }
    println!(
        "collection {} written to {} [{:?}]{}",
        s.record.request.collection_id,
        out.display(),
        s.record.status,
        s.record
            .encrypted_to
            .as_deref()
            .map(|r| format!(", items encrypted to {r}"))
            .unwrap_or_default()
    );
    for (id, name, len, sha) in &s.items {
        println!("  {id}  {name:<20} {len:>12}  {sha}");
    }
    for e in &s.record.errors {
        println!("  error: {e}");
    }
    println!(
        "load it into a collector with: cairn import {}",
        out.display()
    );
    Ok(s.record.status)
}

/// `cairn-agent events`: runs the sensor and prints what it sees.
fn events(
    limit: Option<std::time::Duration>,
    json: bool,
    ring_buffer_bytes: Option<u64>,
    mode: &str,
) -> Result<()> {
    use cairn_agent::sensor::{RunningMode, Sensor, SensorConfig, SensorMode};
    use std::io::Write;
    let mode = match mode {
        "auto" => SensorMode::Auto,
        "ebpf" => SensorMode::Ebpf,
        "procfs" => SensorMode::Procfs,
        other => anyhow::bail!("unknown --mode {other:?} (auto, ebpf or procfs)"),
    };
    let defaults = SensorConfig::default();
    let cfg = SensorConfig {
        mode,
        ring_buffer_bytes: ring_buffer_bytes.unwrap_or(defaults.ring_buffer_bytes),
        ..defaults
    };
    let sensor = Sensor::start(cfg)?;
    let rx = sensor.subscribe();
    let st = sensor.status();
    match st.mode {
        RunningMode::Ebpf => eprintln!(
            "sensor: eBPF, {} tracepoints, ring buffer {} bytes",
            st.tracepoints.len(),
            st.ring_buffer_bytes.unwrap_or(0)
        ),
        RunningMode::Procfs => eprintln!(
            "sensor: polling /proc ({}); events are marked [procfs]",
            st.reason.as_deref().unwrap_or("fallback")
        ),
    }
    let deadline = limit.map(|d| std::time::Instant::now() + d);
    let stdout = std::io::stdout();
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(w) => w,
                None => break,
            },
            None => std::time::Duration::from_secs(1),
        };
        let ev = match rx.recv_timeout(wait) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the sensor stopped")
            }
        };
        let mut out = stdout.lock();
        let line = if json {
            serde_json::to_string(&ev)?
        } else {
            ev.line()
        };
        if writeln!(out, "{line}").is_err() {
            break; // stdout closed (`| head`)
        }
        let _ = out.flush();
    }
    let lost = sensor.lost();
    if !lost.is_empty() {
        eprintln!("lost: {lost:?}");
    }
    Ok(())
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}
