//! Storage checks: block devices opened read-only (the way disk images are read), and the free
//! space where the spool lives.

use super::{check, SelftestOptions, Verdict};
use cairn_protocol::readiness::CheckResult;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Below this, the spool cannot hold even a few chunks: a capture pauses at once.
const SPOOL_MIN_BYTES: u64 = 256 << 20;

pub fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    vec![
        check("disk.block_devices", block_devices),
        check("spool.space", || spool_space(opts)),
    ]
}

/// Whole disks in /sys/class/block with a non-zero size (partitions, empty loop and zram
/// devices are skipped).
fn disks() -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = e.path();
            if dir.join("partition").exists() {
                return None;
            }
            let sectors: u64 = std::fs::read_to_string(dir.join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (sectors > 0).then_some((name, sectors * 512))
        })
        .collect();
    out.sort();
    out
}

fn block_devices() -> Verdict {
    let disks = disks();
    if disks.is_empty() {
        return Verdict::warn(
            "no block device with a size in /sys/class/block",
            "in a container, mount the host's /dev and /sys; disk images need the host's block devices",
        );
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (name, size) in &disks {
        let dev = format!("/dev/{name}");
        // Read-only, and O_NONBLOCK so a removable drive without media cannot hang us.
        let r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(Path::new(&dev))
            .and_then(|f| {
                let mut b = [0u8; 4096];
                f.read_at(&mut b, 0)
            });
        match r {
            Ok(n) => ok.push(format!(
                "{dev} ({:.1} GiB, read {n} bytes)",
                *size as f64 / (1u64 << 30) as f64
            )),
            Err(e) => failed.push(format!("{dev}: {e}")),
        }
    }
    match (ok.is_empty(), failed.is_empty()) {
        (false, true) => Verdict::pass(format!("opened read-only: {}", ok.join(", "))),
        (false, false) => Verdict::warn(
            format!("opened read-only: {}; refused: {}", ok.join(", "), failed.join(", ")),
            "grant CAP_DAC_READ_SEARCH (or run as root) and make sure the host's /dev is visible to the agent",
        ),
        (true, _) => Verdict::fail(
            format!("no block device could be opened read-only: {}", failed.join(", ")),
            "run the agent as root with CAP_DAC_READ_SEARCH; systemd units must not set PrivateDevices or DevicePolicy=closed; in Kubernetes mount the host's /dev",
        ),
    }
}

fn spool_space(opts: &SelftestOptions) -> Verdict {
    let limit = opts
        .state
        .load()
        .map(|c| c.spool_max_bytes)
        .unwrap_or(2 << 30);
    // The spool may not exist yet; its state directory, or the nearest existing parent, will hold it.
    let mut dir = opts.state.spool();
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    let st = match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => s,
        Err(e) => {
            return Verdict::fail(
                format!("statvfs {}: {e}", dir.display()),
                "create the agent's state directory on a local file system",
            )
        }
    };
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let writable = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok();
    let measured = format!(
        "{}: {:.1} GiB free for a spool bounded at {:.1} GiB{}",
        dir.display(),
        gib(free),
        gib(limit),
        if writable { "" } else { "; not writable" }
    );
    if !writable || free < SPOOL_MIN_BYTES {
        Verdict::fail(
            measured,
            "give the state directory (--state-dir, default /var/lib/cairn-agent) a writable file system with at least 256 MiB free",
        )
    } else if free < limit {
        Verdict::warn(
            measured,
            "free space, or lower spool_max_bytes in agent.toml: a capture pauses when the spool is full while the collector is unreachable",
        )
    } else {
        Verdict::pass(measured)
    }
}
