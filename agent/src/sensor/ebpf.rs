//! Loads cairn's BPF object with aya, attaches its tracepoints and drains the ring buffer.

use super::SensorConfig;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use cairn_ebpf::{kind, DROPS_MAP, RINGBUF_MAP, TRACEPOINTS};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// Tracepoints without which there is no process sensor: a failure here is a failed load.
const REQUIRED: &[&str] = &[
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];

pub struct Loaded {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    pub ring: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    pub attached: Vec<String>,
    /// Optional tracepoints this kernel lacks, with the reason.
    pub missing: Vec<String>,
}

/// The ring buffer size the kernel accepts: a power of two, at least one page.
pub fn ring_size(requested: u64) -> u32 {
    let page = 4096u64;
    let v = requested.clamp(page, 1 << 30).next_power_of_two();
    u32::try_from(v).unwrap_or(1 << 30)
}

fn mounted(point: &str, fstype: &str) -> bool {
    crate::mountinfo::read(Path::new("/proc/self/mountinfo"))
        .map(|ms| {
            ms.iter()
                .any(|m| m.mount_point == point && m.fs_type == fstype)
        })
        .unwrap_or(false)
}

/// Mounts tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf where they are absent.
pub fn ensure_mounts() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let have_tracefs = Path::new("/sys/kernel/tracing/events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir();
    if !have_tracefs {
        mount(
            Some("tracefs"),
            "/sys/kernel/tracing",
            Some("tracefs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("no tracefs, and mounting it at /sys/kernel/tracing failed: {e}"))?;
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
    if Path::new("/sys/fs/bpf").is_dir() && !mounted("/sys/fs/bpf", "bpf") {
        match mount(
            Some("bpf"),
            "/sys/fs/bpf",
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) => tracing::info!("mounted bpffs at /sys/fs/bpf"),
            // Not needed to run (nothing is pinned): say so and go on.
            Err(e) => tracing::warn!("cannot mount bpffs at /sys/fs/bpf: {e}"),
        }
    }
    Ok(())
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
}

/// Loads and attaches; an `Err` says why BPF cannot run here.
pub fn load(cfg: &SensorConfig) -> Result<Loaded, String> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing: \
                    CONFIG_DEBUG_INFO_BTF is off)"
                .into(),
        );
    }
    ensure_mounts()?;
    raise_memlock();
    let size = ring_size(cfg.ring_buffer_bytes);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(RINGBUF_MAP, size)
        .load(cairn_ebpf::cairn_object())
        .map_err(|e| format!("loading the BPF object failed: {e}"))?;
    let mut attached = Vec::new();
    let mut missing = Vec::new();
    for (prog, category, name) in TRACEPOINTS {
        let result = (|| -> Result<(), String> {
            if !tracepoint_exists(category, name) {
                return Err(format!(
                    "tracepoint {category}/{name} is not in this kernel"
                ));
            }
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} is not in the object"))?
                .try_into()
                .map_err(|e| format!("{prog}: {e}"))?;
            p.load().map_err(|e| verifier_error(prog, &e))?;
            p.attach(category, name)
                .map_err(|e| format!("attaching {prog} to {category}/{name}: {e}"))?;
            Ok(())
        })();
        match result {
            Ok(()) => attached.push(format!("{category}/{name}")),
            Err(e) if REQUIRED.contains(prog) => return Err(e),
            Err(e) => {
                tracing::warn!("sensor: {e}; continuing without it");
                missing.push(e);
            }
        }
    }
    let ring = RingBuf::try_from(
        ebpf.take_map(RINGBUF_MAP)
            .ok_or("the ring buffer map is missing")?,
    )
    .map_err(|e| format!("ring buffer: {e}"))?;
    let drops = PerCpuArray::try_from(ebpf.take_map(DROPS_MAP).ok_or("the drops map is missing")?)
        .map_err(|e| format!("drop counters: {e}"))?;
    Ok(Loaded {
        _ebpf: ebpf,
        ring,
        drops,
        attached,
        missing,
    })
}

fn tracepoint_exists(category: &str, name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| {
            Path::new(t)
                .join("events")
                .join(category)
                .join(name)
                .is_dir()
        })
}

fn verifier_error(prog: &str, e: &aya::programs::ProgramError) -> String {
    // The verifier log is long: keep its end, where the reason is.
    let text = format!("{e:#}");
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("loading {prog} failed: {}", tail.join("\n"))
}

impl Loaded {
    /// Records dropped in the kernel so far, per kind (summed over CPUs).
    pub fn drops(&self) -> Vec<(u32, u64)> {
        (1..kind::MAX)
            .map(|k| {
                let n = self
                    .drops
                    .get(&k, 0)
                    .map(|v| v.iter().sum::<u64>())
                    .unwrap_or(0);
                (k, n)
            })
            .collect()
    }

    /// Waits until the ring buffer has data or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}
