//! Kernel checks: version and configuration, BTF, tracefs, lockdown, clock synchronisation.

use super::{check, in_root, SelftestOptions, Verdict};
use cairn_protocol::readiness::CheckResult;
use std::io::Read;
use std::path::{Path, PathBuf};

pub fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    vec![
        check("kernel.version", kernel_version),
        check("kernel.config", || kernel_config(&opts.host_root)),
        check("kernel.btf", || btf(opts.btf.as_deref())),
        check("kernel.tracefs", tracefs),
        check("kernel.lockdown", lockdown),
        check("clock.sync", clock_sync),
    ]
}

/// `(major, minor)` of a release string like `6.1.0-18-cloud-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_version() -> Verdict {
    let release = match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(e) => return Verdict::fail(format!("uname failed: {e}"), "report this as a bug"),
    };
    match parse_release(&release) {
        Some(v) if v >= (5, 8) => Verdict::pass(format!(
            "kernel {release}: BPF ring buffer and CAP_BPF available (5.8 or later)"
        )),
        Some(v) if v >= (4, 18) => Verdict::warn(
            format!("kernel {release} is older than 5.8: no BPF ring buffer, so no eBPF sensor"),
            "upgrade to a 5.8+ kernel for the eBPF sensor; until then the agent polls /proc and misses short-lived processes",
        ),
        Some(_) => Verdict::fail(
            format!("kernel {release} is older than 4.18"),
            "upgrade the kernel: cairn supports 4.18 and later (5.8+ for the eBPF sensor)",
        ),
        None => Verdict::warn(
            format!("cannot parse the kernel release {release:?}"),
            "check that uname -r gives MAJOR.MINOR…",
        ),
    }
}

/// The options the sensor and collection need, and what their absence costs.
const CONFIG_NEEDS: &[(&str, &str)] = &[
    ("CONFIG_BPF_SYSCALL", "no BPF at all"),
    ("CONFIG_BPF_EVENTS", "no BPF programs on tracepoints"),
    (
        "CONFIG_FTRACE_SYSCALLS",
        "no syscall tracepoints (connect, accept, setuid…)",
    ),
    ("CONFIG_DEBUG_INFO_BTF", "no kernel BTF for CO-RE"),
    ("CONFIG_PROC_KCORE", "no /proc/kcore for physical memory"),
];

/// The kernel's build configuration: /proc/config.gz, else /boot/config-RELEASE.
fn read_config(host_root: &Path) -> Result<(String, PathBuf), String> {
    let gz = in_root(host_root, "/proc/config.gz");
    if let Ok(f) = std::fs::File::open(&gz) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: cannot decompress: {e}", gz.display()))?;
        return Ok((text, gz));
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let boot = in_root(host_root, &format!("/boot/config-{release}"));
    std::fs::read_to_string(&boot)
        .map(|t| (t, boot.clone()))
        .map_err(|e| {
            format!(
                "neither {} nor {} is readable ({e})",
                gz.display(),
                boot.display()
            )
        })
}

fn kernel_config(host_root: &Path) -> Verdict {
    let (text, from) = match read_config(host_root) {
        Ok(c) => c,
        Err(e) => {
            return Verdict::warn(
                format!("kernel configuration not found: {e}"),
                "install the kernel's config file in /boot (or build with CONFIG_IKCONFIG_PROC) so the configuration can be checked",
            )
        }
    };
    let enabled = |opt: &str| {
        text.lines()
            .any(|l| l == format!("{opt}=y") || l == format!("{opt}=m"))
    };
    let missing: Vec<String> = CONFIG_NEEDS
        .iter()
        .filter(|(opt, _)| !enabled(opt))
        .map(|(opt, cost)| format!("{opt} ({cost})"))
        .collect();
    if missing.is_empty() {
        Verdict::pass(format!(
            "{}: {} all set",
            from.display(),
            CONFIG_NEEDS
                .iter()
                .map(|(o, _)| *o)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        let bpf_missing = missing.iter().any(|m| m.starts_with("CONFIG_BPF"));
        let measured = format!("{}: not set: {}", from.display(), missing.join("; "));
        let fix = "use a kernel built with these options (every major distribution's cloud kernel has them)";
        if bpf_missing {
            Verdict::fail(measured, fix)
        } else {
            Verdict::warn(measured, fix)
        }
    }
}

fn btf(override_path: Option<&Path>) -> Verdict {
    let path = override_path.unwrap_or(Path::new("/sys/kernel/btf/vmlinux"));
    let mut magic = [0u8; 2];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        // BTF's magic is 0xeB9F, stored in the file's byte order.
        Ok(()) if magic == [0x9f, 0xeb] || magic == [0xeb, 0x9f] => {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            Verdict::pass(format!("BTF at {} ({len} bytes)", path.display()))
        }
        Ok(()) => Verdict::fail(
            format!("{} is not BTF (magic {:02x}{:02x})", path.display(), magic[0], magic[1]),
            "give --btf a raw BTF file for this exact kernel (e.g. from BTFHub)",
        ),
        Err(e) => Verdict::fail(
            format!("no kernel BTF: {}: {e}", path.display()),
            "use a kernel with CONFIG_DEBUG_INFO_BTF=y, or pass --btf FILE with this kernel's BTF (BTFHub); in a container mount the host's /sys/kernel/btf",
        ),
    }
}

fn tracefs() -> Verdict {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let probe = Path::new(root).join("events/syscalls/sys_enter_getppid");
        if probe.is_dir() {
            return Verdict::pass(format!("tracefs at {root} lists syscall tracepoints"));
        }
    }
    Verdict::fail(
        "no tracefs with syscall tracepoints at /sys/kernel/tracing or /sys/kernel/debug/tracing",
        "mount it (mount -t tracefs tracefs /sys/kernel/tracing); in Kubernetes mount the host's /sys/kernel/tracing into the pod",
    )
}

fn lockdown() -> Verdict {
    let path = "/sys/kernel/security/lockdown";
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // "none [integrity] confidentiality": the bracketed word is the mode.
            let mode = text
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
                .unwrap_or_else(|| text.trim().to_string());
            match mode.as_str() {
                "none" => Verdict::pass("kernel lockdown: none"),
                "integrity" => Verdict::warn(
                    "kernel lockdown: integrity (/dev/mem is closed; /proc/kcore stays readable)",
                    "physical memory comes from /proc/kcore; nothing to do unless you need /dev/mem",
                ),
                _ => Verdict::fail(
                    format!("kernel lockdown: {mode}: /proc/kcore, /dev/mem and BPF reads of kernel memory are refused"),
                    "boot with lockdown=integrity or none (Secure Boot enforces confidentiality on some distributions) to capture physical memory; process memory is unaffected",
                ),
            }
        }
        Err(e) if Path::new("/sys/kernel/security").is_dir() => Verdict::pass(format!(
            "no lockdown LSM ({path}: {e}): nothing is locked down"
        )),
        Err(_) => Verdict::warn(
            "lockdown mode unknown: securityfs is not mounted at /sys/kernel/security",
            "mount securityfs (mount -t securityfs securityfs /sys/kernel/security) so the lockdown mode can be read",
        ),
    }
}

fn clock_sync() -> Verdict {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into `tx`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Verdict::warn(
            format!("adjtimex failed: {}", std::io::Error::last_os_error()),
            "check the clock with timedatectl or chronyc tracking",
        );
    }
    let unsynced = state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    let daemon = [
        "/run/chrony/chronyd.pid",
        "/run/chronyd.pid",
        "/run/systemd/timesync/synchronized",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .map(|p| format!("; {p} present"))
    .unwrap_or_default();
    if unsynced {
        Verdict::warn(
            format!(
                "the kernel clock is not synchronised (STA_UNSYNC; max error {} µs){daemon}",
                tx.maxerror
            ),
            "run chrony or systemd-timesyncd (timedatectl set-ntp true; on EC2 use the Amazon Time Sync Service at 169.254.169.123) so this host's timestamps line up with other hosts'",
        )
    } else {
        Verdict::pass(format!(
            "kernel clock synchronised (estimated error {} µs, max {} µs){daemon}",
            tx.esterror, tx.maxerror
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.1.0-18-cloud-amd64"), Some((6, 1)));
        assert_eq!(
            parse_release("5.10.219-208.866.amzn2.x86_64"),
            Some((5, 10))
        );
        assert_eq!(parse_release("garbage"), None);
    }
}
