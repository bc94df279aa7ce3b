//! Memory checks: which physical memory sources open, and whether a process's memory can be
//! read through /proc/PID/mem (a child of ours, holding a marker we then look for).

use super::{check, in_root, SelftestOptions, Verdict};
use cairn_protocol::readiness::CheckResult;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    vec![
        check("memory.physical", || physical(&opts.host_root)),
        check("memory.process", process_memory),
    ]
}

/// Opens `path` read-only and reads its first bytes: an ELF header for /proc/kcore.
fn probe_source(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; 4];
    match f.read_exact(&mut head) {
        Ok(()) if &head == b"\x7fELF" => Ok("ELF core, readable".into()),
        Ok(()) => Ok("opened, readable".into()),
        // /dev/mem refuses offset 0 under STRICT_DEVMEM; opening it is the test.
        Err(e) => Ok(format!("opened (first read: {e})")),
    }
}

fn physical(host_root: &Path) -> Verdict {
    let sources = [
        in_root(host_root, "/proc/kcore"),
        Path::new("/dev/crash").to_path_buf(),
        Path::new("/dev/mem").to_path_buf(),
    ];
    let mut usable = Vec::new();
    let mut refused = Vec::new();
    for s in &sources {
        match probe_source(s) {
            Ok(what) => usable.push(format!("{}: {what}", s.display())),
            Err(e) => refused.push(format!("{}: {e}", s.display())),
        }
    }
    if usable.is_empty() {
        Verdict::warn(
            format!("no physical memory source: {}", refused.join("; ")),
            "physical memory needs /proc/kcore (CONFIG_PROC_KCORE, lockdown none or integrity, CAP_SYS_RAWIO) or /dev/crash; process memory can still be collected",
        )
    } else {
        let mut m = usable.join("; ");
        if !refused.is_empty() {
            m.push_str(&format!(" (not available: {})", refused.join("; ")));
        }
        Verdict::pass(m)
    }
}

/// What the child holds and we look for in its memory.
static MARKER: [u8; 32] = *b"cairn-selftest-process-memory-ok";

fn process_memory() -> Verdict {
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .ok();
    // SAFETY: the child only calls async-signal-safe prctl() and pause(); it touches no lock
    // another thread of ours might have held at the fork.
    let child =
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // SAFETY: prctl and pause are async-signal-safe system calls. PDEATHSIG: the
                // child goes with us if we die before we kill it.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                loop {
                    // SAFETY: as above.
                    unsafe {
                        libc::pause();
                    }
                }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => child,
            Err(e) => return Verdict::fail(
                format!("cannot start a child process: {e}"),
                "check the process limits (ulimit -u, the unit's TasksMax, the pod's pids limit)",
            ),
        };
    let path = format!("/proc/{child}/mem");
    let addr = MARKER.as_ptr() as u64;
    let mut buf = [0u8; 32];
    let read = std::fs::File::open(&path).and_then(|f| f.read_exact_at(&mut buf, addr));
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    let scope = yama
        .as_deref()
        .map(|s| format!(" (Yama ptrace_scope {s})"))
        .unwrap_or_default();
    match read {
        Ok(()) if buf == MARKER => Verdict::pass(format!(
            "read 32 bytes at {addr:#x} from {path} of a child process and found its marker{scope}"
        )),
        Ok(()) => Verdict::fail(
            format!("{path} at {addr:#x} returned other bytes than the child holds{scope}"),
            "report this as a bug: the kernel returned unexpected memory",
        ),
        Err(e) => Verdict::fail(
            format!("cannot read {path} of a child process: {e}{scope}"),
            "grant CAP_SYS_PTRACE, and set kernel.yama.ptrace_scope to 2 or lower (3 forbids all memory reads); seccomp profiles that block process_vm_readv/ptrace also break this",
        ),
    }
}
