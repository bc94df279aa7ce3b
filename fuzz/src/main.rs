//! `cairn-fuzz`: run the fuzz targets (`cargo xtask fuzz` calls it).
//!
//! `run` supervises: each target runs in a worker process of its own, which publishes every
//! input in a shared file before running it; a worker that hangs past the target's timeout is
//! killed, and the input of a worker that died (stack overflow, abort, the OOM killer) is
//! read back from that file. Either is saved as a crash like a panic is.

use anyhow::{bail, Context, Result};
use cairn_fuzz::engine::{self, Stats};
use cairn_fuzz::targets::{self, Target};
use cairn_fuzz::{shared, targets::offline};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "cairn-fuzz", about = "Fuzz cairn's decoders of outside bytes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The targets, with what each one feeds.
    List,
    /// Fuzz targets (default: all) for a total time split evenly between them.
    Run {
        targets: Vec<String>,
        /// Seconds in all, shared by the targets.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Seed of the mutations (default: from the clock); printed, so a run can be repeated.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run files through a target once and say what each does.
    Replay { target: String, files: Vec<PathBuf> },
    /// One target in this process (what `run` starts); prints its figures as JSON.
    #[command(hide = true)]
    Worker {
        target: String,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        state: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::List => {
            for t in targets::all() {
                println!("{:<20} {}", t.name, t.about);
            }
            Ok(true)
        }
        Cmd::Run {
            targets,
            seconds,
            seed,
        } => run(&targets, seconds, seed),
        Cmd::Replay { target, files } => replay(&target, &files),
        Cmd::Worker {
            target,
            seconds,
            seed,
            state,
        } => worker(&target, seconds, seed, &state).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn target(name: &str) -> Result<Target> {
    targets::find(name).with_context(|| {
        let names: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
        format!(
            "no fuzz target {name:?}; the targets are {}",
            names.join(", ")
        )
    })
}

fn worker(name: &str, seconds: f64, seed: u64, state: &Path) -> Result<()> {
    let t = target(name)?;
    let seeds = targets::seeds(t.name).context("reading the seed corpus")?;
    let mut publish = shared::SharedInput::open(state)?;
    let stats = engine::fuzz(
        &t,
        seeds,
        Duration::from_secs_f64(seconds),
        seed,
        &targets::regressions_dir(t.name),
        &mut publish,
    )
    .context("saving a crash")?;
    offline::clean_up();
    let crashes: Vec<Value> = stats
        .crashes
        .iter()
        .map(|c| json!({"path": c.path, "finding": c.finding, "new": c.new}))
        .collect();
    println!(
        "{}",
        json!({"inputs": stats.inputs, "seconds": stats.seconds, "seeds": stats.seeds,
               "corpus": stats.corpus, "shapes": stats.shapes, "crashes": crashes})
    );
    Ok(())
}

fn stats_from(v: &Value) -> Stats {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Stats {
        inputs: n("inputs"),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        seeds: n("seeds") as usize,
        corpus: n("corpus") as usize,
        shapes: n("shapes") as usize,
        crashes: v["crashes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| engine::Crash {
                        path: PathBuf::from(c["path"].as_str().unwrap_or("")),
                        finding: c["finding"].as_str().unwrap_or("").to_string(),
                        new: c["new"].as_bool().unwrap_or(true),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Run one target in a worker and watch it.
fn supervise(t: &Target, seconds: f64, seed: u64) -> Result<Stats> {
    let state = std::env::temp_dir().join(format!(
        "cairn-fuzz-{}-{}.state",
        std::process::id(),
        t.name
    ));
    shared::create(&state, t.max_len)?;
    let stderr_path = state.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", t.name, "--seconds", &seconds.to_string()])
        .args(["--seed", &seed.to_string(), "--state"])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("cannot start a fuzz worker")?;
    let started = Instant::now();
    let (mut last_seq, mut since) = (0u64, Instant::now());
    let hung = loop {
        if let Some(status) = child.try_wait()? {
            break (!status.success()).then(|| format!("the worker died ({status})"));
        }
        std::thread::sleep(Duration::from_millis(50));
        let (seq, _) = shared::read(&state)?;
        if seq != last_seq {
            (last_seq, since) = (seq, Instant::now());
        } else if since.elapsed() > t.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Some(format!("an input ran longer than {:?}", t.timeout));
        }
        if started.elapsed().as_secs_f64() > seconds + 120.0 {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {} worker did not stop after {seconds} s", t.name);
        }
    };
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_string(&mut out)?;
    }
    let stderr_tail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    let mut stats = match serde_json::from_str::<Value>(out.trim()) {
        Ok(v) if hung.is_none() => stats_from(&v),
        _ => Stats {
            seconds: started.elapsed().as_secs_f64(),
            inputs: last_seq,
            ..Stats::default()
        },
    };
    if let Some(why) = hung {
        let (_, input) = shared::read(&state)?;
        let prefix = if why.starts_with("an input ran") {
            "timeout"
        } else {
            "crash"
        };
        let (path, new) = engine::save_crash(
            &targets::regressions_dir(t.name),
            &engine::crash_name(prefix, &input),
            &input,
        )?;
        let tail: String = stderr_tail
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        stats.crashes.push(engine::Crash {
            path,
            finding: format!("{why}: {tail}"),
            new,
        });
    }
    let _ = std::fs::remove_file(&state);
    Ok(stats)
}

fn run(names: &[String], seconds: f64, seed: Option<u64>) -> Result<bool> {
    let chosen: Vec<Target> = if names.is_empty() {
        targets::all()
    } else {
        names.iter().map(|n| target(n)).collect::<Result<_>>()?
    };
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let each = seconds / chosen.len().max(1) as f64;
    println!(
        "fuzzing {} target(s), {each:.1} s each, seed {seed} (debug build: overflow checks on)",
        chosen.len()
    );
    println!(
        "| target | inputs/s | inputs | seeds | corpus | shapes | new crashes |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let (mut failed, mut total_inputs) = (Vec::new(), 0u64);
    for (i, t) in chosen.iter().enumerate() {
        let stats = supervise(t, each, seed.wrapping_add(i as u64))?;
        total_inputs += stats.inputs;
        let new = stats.crashes.iter().filter(|c| c.new).count();
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {new} |",
            t.name,
            stats.per_second(),
            stats.inputs,
            stats.seeds,
            stats.corpus,
            stats.shapes
        );
        for c in &stats.crashes {
            let known = if c.new {
                ""
            } else {
                " (known, still crashing)"
            };
            println!(
                "    crash{known}: {}\n      {}",
                c.path.display(),
                c.finding
            );
        }
        if !stats.crashes.is_empty() {
            failed.push(t.name);
        }
    }
    println!("{total_inputs} inputs in all");
    if failed.is_empty() {
        println!("no crashes");
        Ok(true)
    } else {
        println!(
            "crashes in {}: fix the decoder; the inputs are in fuzz/regressions/ and `cargo test -p cairn-fuzz` replays them",
            failed.join(", ")
        );
        Ok(false)
    }
}

fn replay(name: &str, files: &[PathBuf]) -> Result<bool> {
    let t = target(name)?;
    engine::quiet_panics();
    let mut ok = true;
    for f in files {
        let data = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        match engine::run_one(&t, &data) {
            Ok(shape) => println!("{}: ok (shape {shape:016x})", f.display()),
            Err(finding) => {
                ok = false;
                println!("{}: {finding}", f.display());
            }
        }
    }
    offline::clean_up();
    Ok(ok)
}
