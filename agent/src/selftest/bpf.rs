//! Can this process run the eBPF sensor? Its capabilities, and a real load and attach of the
//! self-test's tiny tracepoint program (`ebpf/bpf/selftest.bpf.c`) with a ring buffer read back.

use super::{result, SelftestOptions, Verdict};
use aya::maps::{Array, RingBuf};
use aya::programs::TracePoint;
use aya::{Btf, EbpfLoader};
use cairn_ebpf::selftest as probe;
use cairn_protocol::readiness::CheckResult;
use std::time::{Duration, Instant};

/// (bit, name, what it is for) of the capabilities the agent uses.
const CAPS: &[(u32, &str, &str)] = &[
    (39, "CAP_BPF", "load BPF programs and maps"),
    (38, "CAP_PERFMON", "attach tracepoints"),
    (
        21,
        "CAP_SYS_ADMIN",
        "BPF on kernels before 5.8, mounting tracefs",
    ),
    (19, "CAP_SYS_PTRACE", "read other processes' memory"),
    (2, "CAP_DAC_READ_SEARCH", "read any file for collection"),
];

const CAP_REMEDIATION: &str = "run the agent as root with these capabilities: the systemd unit's AmbientCapabilities/CapabilityBoundingSet (deploy/systemd) or the pod's securityContext.capabilities.add (deploy/kubernetes)";

/// Effective capability bits of this process.
fn effective_caps() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or("/proc/self/status has no CapEff line")?;
    u64::from_str_radix(hex.trim(), 16).map_err(|e| format!("CapEff {hex:?}: {e}"))
}

fn capabilities() -> Verdict {
    let eff = match effective_caps() {
        Ok(c) => c,
        Err(e) => return Verdict::fail(e, "check that /proc is mounted"),
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let missing: Vec<String> = CAPS
        .iter()
        .filter(|(bit, _, _)| !has(*bit))
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    let bpf_possible = (has(39) && has(38)) || has(21);
    if missing.is_empty() {
        return Verdict::pass(format!(
            "effective capabilities include {}",
            CAPS.iter().map(|c| c.1).collect::<Vec<_>>().join(", ")
        ));
    }
    let measured = format!("missing: {}", missing.join(", "));
    if !bpf_possible || !has(19) {
        Verdict::fail(measured, CAP_REMEDIATION)
    } else {
        Verdict::warn(measured, CAP_REMEDIATION)
    }
}

/// An error with its causes: aya's messages leave the kernel's errno to the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(&format!(": {s}"));
        }
        cur = c.source();
    }
    text
}

/// Whether the effective capabilities allow BPF: CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
fn bpf_allowed() -> bool {
    effective_caps()
        .map(|eff| {
            let has = |bit: u32| eff & (1u64 << bit) != 0;
            (has(39) && has(38)) || has(21)
        })
        .unwrap_or(false)
}

/// What the probe showed: hits counted by the program, and whether our record came back
/// through the ring buffer.
struct ProbeRun {
    hits: u64,
    ring_record: Result<u32, String>,
}

fn run_probe(btf: Option<&std::path::Path>) -> Result<ProbeRun, String> {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    let parsed;
    let mut loader = EbpfLoader::new();
    if let Some(path) = btf {
        parsed = Btf::parse_file(path, aya::Endianness::default())
            .map_err(|e| format!("--btf {}: {}", path.display(), chain(&e)))?;
        loader.btf(Some(&parsed));
    }
    let mut ebpf = loader
        .load(cairn_ebpf::selftest_object())
        .map_err(|e| format!("loading the probe's maps failed: {}", chain(&e)))?;
    let prog: &mut TracePoint = ebpf
        .program_mut(probe::PROGRAM)
        .ok_or("the probe program is missing from its object")?
        .try_into()
        .map_err(|e| format!("{}: {e}", probe::PROGRAM))?;
    prog.load()
        .map_err(|e| format!("loading {} failed: {}", probe::PROGRAM, chain(&e)))?;
    prog.attach(probe::CATEGORY, probe::TRACEPOINT)
        .map_err(|e| {
            format!(
                "attaching {} to {}/{} failed: {e}",
                probe::PROGRAM,
                probe::CATEGORY,
                probe::TRACEPOINT
            )
        })?;
    for _ in 0..4 {
        // SAFETY: getppid has no preconditions; it is the syscall the probe watches.
        unsafe { libc::getppid() };
    }
    let me = std::process::id();
    let mut ring = RingBuf::try_from(
        ebpf.take_map(probe::RING_MAP)
            .ok_or("the probe's ring buffer is missing")?,
    )
    .map_err(|e| format!("ring buffer: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut ring_record = Err("no record from this process arrived within 2 s".to_string());
    'wait: while Instant::now() < deadline {
        while let Some(rec) = ring.next() {
            if let Ok(b) = <[u8; 4]>::try_from(&rec[..]) {
                let tgid = u32::from_ne_bytes(b);
                if tgid == me {
                    ring_record = Ok(tgid);
                    break 'wait;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let hits: Array<_, u64> = Array::try_from(
        ebpf.map(probe::HITS_MAP)
            .ok_or("the probe's hit counter is missing")?,
    )
    .map_err(|e| format!("hit counter: {e}"))?;
    let hits = hits.get(&0, 0).map_err(|e| format!("reading hits: {e}"))?;
    Ok(ProbeRun { hits, ring_record })
}

fn bpf_remediation(error: &str) -> String {
    if !bpf_allowed() || error.contains("os error 1)") {
        format!("the kernel refused BPF to this process: grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN before kernel 5.8); {CAP_REMEDIATION}. Without them the agent falls back to polling /proc")
    } else if error.contains("BTF") || error.contains("btf") {
        "the kernel's BTF is missing or unusable: use a kernel with CONFIG_DEBUG_INFO_BTF=y or pass --btf FILE".into()
    } else {
        "check the agent's log for the verifier's message, and that tracefs and the syscall tracepoints exist (kernel.tracefs)".into()
    }
}

pub fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    let start = Instant::now();
    let caps = result("capabilities", capabilities(), start);
    if let Some(sensor) = &opts.running_sensor {
        let start = Instant::now();
        return vec![
            caps,
            result("bpf.load_attach", Verdict::pass(sensor.clone()), start),
            result(
                "bpf.ring_buffer",
                Verdict::pass("the running sensor reads its events through a BPF ring buffer"),
                start,
            ),
        ];
    }
    let start = Instant::now();
    let run = run_probe(opts.btf.as_deref());
    let at = format!("{}/{}", probe::CATEGORY, probe::TRACEPOINT);
    let (load, ring) = match run {
        Ok(r) if r.hits > 0 => (
            Verdict::pass(format!(
                "loaded {} and attached it to {at}; it fired {} time(s)",
                probe::PROGRAM,
                r.hits
            )),
            match r.ring_record {
                Ok(tgid) => Verdict::pass(format!(
                    "a record from pid {tgid} came back through a BPF ring buffer"
                )),
                Err(e) => Verdict::fail(
                    format!("the ring buffer was created but {e}"),
                    "the kernel lacks a working BPF ring buffer (5.8+); the agent will poll /proc",
                ),
            },
        ),
        Ok(_) => (
            Verdict::fail(
                format!("attached to {at}, but the program never fired"),
                "check that syscall tracepoints work on this kernel (CONFIG_FTRACE_SYSCALLS)",
            ),
            Verdict::fail(
                "not tested: the probe never fired",
                "fix bpf.load_attach first",
            ),
        ),
        Err(e) => {
            let fix = bpf_remediation(&e);
            (
                Verdict::fail(format!("BPF probe on {at}: {e}"), fix),
                Verdict::fail(
                    "not tested: the BPF probe did not load",
                    "fix bpf.load_attach first",
                ),
            )
        }
    };
    let load = result("bpf.load_attach", load, start);
    let ring = CheckResult {
        duration_ms: 0,
        ..result("bpf.ring_buffer", ring, Instant::now())
    };
    vec![caps, load, ring]
}
